import numpy as np
import pytest
import soundfile
import torch
from torch import nn

from data.audio import convert_audio, read_audio
from data.extract_tokens import extract_tokens
from data.manifest import AudioEntry, write_sidecar
from data.token_shards import read_info, read_token_shards


class StandInCodec(nn.Module):
    """What extraction needs of a codec: a strided conv whose argmax per codebook is the code."""
    sample_rate = 8000
    channels = 1
    hop = 160
    frame_rate = 8000 / 160
    num_codebooks = 2
    cardinality = 16

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, self.num_codebooks * self.cardinality, kernel_size=self.hop, stride=self.hop)
        self.calls = 0

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = self.conv(wav)  # [B, K * card, F]
        return logits.unflatten(1, (self.num_codebooks, self.cardinality)).argmax(dim=2)  # [B, K, F]


@pytest.fixture
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for index in range(5):
        path = tmp_path / "audio" / f"clip{index}.wav"
        path.parent.mkdir(exist_ok=True)
        seconds = 0.4 + 0.1 * index
        soundfile.write(path, rng.uniform(-0.5, 0.5, (int(16000 * seconds), 2)), 16000)  # codec resamples, mixes
        write_sidecar(path, {"description": f"clip number {index}", "genre": "test"})
        entries.append(AudioEntry(path=str(path), duration=seconds, sample_rate=16000, channels=2))
    return entries


def expected_codes(codec: StandInCodec, path: str) -> np.ndarray:
    wav, sample_rate = read_audio(path)
    with torch.no_grad():
        return codec.encode(convert_audio(wav, sample_rate, 8000, 1)[None])[0].numpy()


def test_shards_hold_each_files_codes_and_metadata(tmp_path, manifest):
    codec = StandInCodec()
    summary = extract_tokens(codec, manifest, tmp_path / "tokens", shard_size=2, progress=False)
    assert (summary.shards_written, summary.files_encoded, summary.files_failed) == (3, 5, 0)
    items = read_token_shards(tmp_path / "tokens")
    assert [item.path for item in items] == [entry.path for entry in manifest]
    for item in items:
        assert item.codes.dtype == np.int16  # 16 codes fit
        np.testing.assert_array_equal(item.codes, expected_codes(codec, item.path))
    assert items[3].num_frames == int(0.7 * 8000) // 160
    assert items[3].metadata == {"description": "clip number 3", "genre": "test"}
    assert read_info(tmp_path / "tokens")["frame_rate"] == 50.0


class Interrupted(Exception):
    pass


def test_interrupted_extraction_resumes_without_duplicates(tmp_path, manifest):
    codec = StandInCodec()
    real_encode = codec.encode

    def encode_then_die(wav):
        if codec.calls == 3:  # shard 0 (files 0, 1) is done; die inside shard 1
            raise Interrupted
        return real_encode(wav)

    codec.encode = encode_then_die
    out = tmp_path / "tokens"
    with pytest.raises(Interrupted):
        extract_tokens(codec, manifest, out, shard_size=2, progress=False)
    assert sorted(path.name for path in out.iterdir()) == ["shard_00000.jsonl", "shard_00000.npy", "tokens.json"]
    finished = (out / "shard_00000.npy").stat().st_mtime_ns

    codec.encode = real_encode
    codec.calls = 0
    summary = extract_tokens(codec, manifest, out, shard_size=2, progress=False)
    assert (summary.shards_skipped, summary.shards_written, summary.files_encoded) == (1, 2, 3)
    assert codec.calls == 3  # only the files of the missing shards were encoded again
    assert (out / "shard_00000.npy").stat().st_mtime_ns == finished
    assert [item.path for item in read_token_shards(out)] == [entry.path for entry in manifest]
    assert not list(out.glob("*.tmp"))

    again = extract_tokens(codec, manifest, out, shard_size=2, progress=False)
    assert (again.shards_skipped, again.shards_written) == (3, 0)


def test_resume_with_other_settings_is_refused(tmp_path, manifest):
    extract_tokens(StandInCodec(), manifest[:2], tmp_path, shard_size=2, progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        extract_tokens(StandInCodec(), manifest[:2], tmp_path, shard_size=1, progress=False)


def test_unreadable_file_is_skipped_and_counted(tmp_path, manifest):
    (tmp_path / "audio" / "clip2.wav").write_bytes(b"broken")
    summary = extract_tokens(StandInCodec(), manifest, tmp_path / "tokens", shard_size=2, progress=False)
    assert (summary.files_encoded, summary.files_failed) == (4, 1)
    assert [item.path.rsplit("/", 1)[1] for item in read_token_shards(tmp_path / "tokens")] == [
        "clip0.wav", "clip1.wav", "clip3.wav", "clip4.wav"]
