import json
import shutil
from pathlib import Path

import pytest
import soundfile
import torch

from codec import Codec, CodecConfig
from data.audio import convert_audio, read_audio
from eval.audio_metrics import si_sdr
from eval.codec_eval import default_bitrates, list_audio, main
from eval.opus import opus_round_trip

SAMPLE_RATE = 16_000
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg with libopus is not installed")


def _harmonic(seconds: float, f0: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    t = torch.arange(int(sample_rate * seconds)) / sample_rate
    return sum(0.2 / k * torch.sin(2 * torch.pi * f0 * k * t) for k in range(1, 6)).reshape(1, -1)


@needs_ffmpeg
def test_opus_round_trip_is_time_aligned_and_better_at_higher_bitrate():
    wav = _harmonic(1.0, 220.0)
    low, high = (si_sdr(opus_round_trip(wav, SAMPLE_RATE, kbps), wav).item() for kbps in (6, 24))
    # Misaligned by Opus's pre-skip (6.5 ms) the harmonic tone would score below 0 dB.
    assert high > 10.0
    assert high > low


def _tiny_codec(bandwidths: tuple[float, ...]) -> Codec:
    """1000 frames/s, 64-entry codebooks: 6 kbps per codebook, 4 codebooks."""
    config = CodecConfig(
        sample_rate=SAMPLE_RATE,
        channels=1,
        seanet=dict(dimension=16, n_filters=8, ratios=(4, 4), lstm_layers=0),
        quantizer=dict(num_codebooks=4, codebook_size=64, lookup="factorized"),
        bandwidths=bandwidths,
    )
    return Codec(config)


def test_default_bitrates_are_the_codec_bandwidths_or_powers_of_two_codebooks():
    assert default_bitrates(_tiny_codec((6.0, 18.0))) == [6.0, 18.0]
    assert default_bitrates(_tiny_codec(())) == [6.0, 12.0, 24.0]


@needs_ffmpeg
def test_codec_eval_command_writes_scores_for_codec_and_opus(tmp_path):
    torch.manual_seed(0)
    codec = _tiny_codec((6.0, 12.0))
    codec.save(tmp_path / "codec")
    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "a.wav", _harmonic(1.0, 220.0, 22_050)[0].numpy(), 22_050)  # resampled to the codec's rate
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"path": "audio/a.wav"}) + "\n")

    out = tmp_path / "out"
    main(["--checkpoint", str(tmp_path / "codec"), "--audio", str(tmp_path / "manifest.jsonl"), "--out", str(out),
          "--bitrates", "12"])  # one bitrate: ViSQOL costs about 1 s per call

    result = json.loads((out / "codec_eval.json").read_text())
    rows = {(row["system"], row["kbps"]): row for row in result["average"]}
    assert list(rows) == [("codec", 12.0), ("opus", 12.0), ("reference", None)]  # one file: no "other clip" row
    ceiling = rows.pop(("reference", None))
    assert ceiling["chroma_cosine"] == pytest.approx(1.0) and ceiling["key_agreement"] == 1.0
    assert ceiling["si_sdr"] is None and ceiling["visqol"] is None
    # Opus at 12 kbps beats an untrained codec on every metric.
    opus, untrained = rows[("opus", 12.0)], rows[("codec", 12.0)]
    assert opus["si_sdr"] > untrained["si_sdr"] and opus["visqol"] > untrained["visqol"]
    assert opus["mel_distance"] < untrained["mel_distance"] and opus["stft_distance"] < untrained["stft_distance"]
    assert all(1.0 <= row["visqol"] <= 5.0 for row in rows.values())
    # The codec row is the saved codec with 2 codebooks (12 kbps) on the file resampled to 16 kHz.
    wav, file_rate = read_audio(audio / "a.wav")
    reference = convert_audio(wav, file_rate, SAMPLE_RATE, 1)
    loaded = Codec.load(tmp_path / "codec")
    with torch.no_grad():
        decoded = loaded.decode(loaded.encode(reference.unsqueeze(0), 2))[0, :, : reference.shape[-1]]
    assert untrained["si_sdr"] == pytest.approx(si_sdr(decoded, reference).item(), abs=1e-4)
    table = (out / "codec_eval.md").read_text()
    assert table.count("\n") == 3 + len(rows) and f"| opus | 12 | 1 | {opus['si_sdr']:.2f} |" in table
    assert "| reference |  | 1 | n/a | n/a | n/a | n/a | 1.00 | 1.00 |" in table
    # Opus keeps the notes of a harmonic tone; the untrained codec does not.
    assert opus["chroma_cosine"] > 0.95 > untrained["chroma_cosine"]


def test_folder_and_manifest_list_the_same_files(tmp_path):
    for name in ("b.flac", "a.wav", "sub/c.wav", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    manifest = tmp_path / "list.jsonl"
    paths = ("a.wav", "b.flac", str(tmp_path / "sub/c.wav"))  # relative to the manifest, or absolute
    manifest.write_text("".join(json.dumps({"path": path}) + "\n" for path in paths))
    expected = [tmp_path / "a.wav", tmp_path / "b.flac", tmp_path / "sub/c.wav"]
    assert list_audio(tmp_path) == list_audio(manifest) == expected
    with pytest.raises(ValueError, match="no 'path'"):
        (tmp_path / "bad.jsonl").write_text('{"file": "a.wav"}\n')
        list_audio(tmp_path / "bad.jsonl")


@needs_ffmpeg
def test_opus_bitrates_set_the_reference_rates_apart_from_the_codecs(tmp_path):
    torch.manual_seed(0)
    _tiny_codec((6.0, 12.0)).save(tmp_path / "codec")
    soundfile.write(tmp_path / "a.wav", _harmonic(1.0, 220.0, SAMPLE_RATE)[0].numpy(), SAMPLE_RATE)
    arguments = ["--checkpoint", str(tmp_path / "codec"), "--audio", str(tmp_path), "--no-visqol"]
    main(arguments + ["--out", str(tmp_path / "out"), "--bitrates", "6", "--opus-bitrates", "8", "16"])
    result = json.loads((tmp_path / "out" / "codec_eval.json").read_text())
    rows = [(row["system"], row["kbps"]) for row in result["average"]]
    assert rows == [("codec", 6.0), ("opus", 8.0), ("opus", 16.0), ("reference", None)]
    opus = {row["kbps"]: row for row in result["average"] if row["system"] == "opus"}
    assert opus[16.0]["si_sdr"] > opus[8.0]["si_sdr"]  # the reference really ran at two different rates

    with pytest.raises(SystemExit, match="--opus-bitrates must be >= 6 kbps"):
        main(arguments + ["--out", str(tmp_path / "bad"), "--opus-bitrates", "3"])
    assert not (tmp_path / "bad").exists()


def test_other_clip_row_scores_each_file_against_the_previous_one(tmp_path):
    """The floor of the pitch metrics: music with other notes. Two tones a tritone apart share no pitch class."""
    torch.manual_seed(0)
    _tiny_codec((6.0,)).save(tmp_path / "codec")
    for name, f0 in (("a.wav", 220.0), ("b.wav", 311.13)):  # A3 and Eb4
        soundfile.write(tmp_path / name, _harmonic(1.0, f0)[0].numpy(), SAMPLE_RATE)
    main(["--checkpoint", str(tmp_path / "codec"), "--audio", str(tmp_path), "--no-visqol", "--no-opus",
          "--out", str(tmp_path / "out"), "--figure", "0.5"])
    result = json.loads((tmp_path / "out" / "codec_eval.json").read_text())
    assert (tmp_path / "out" / "reconstruction.png").stat().st_size > 10_000
    floor = [score for score in result["per_clip"] if score["system"] == "other clip"]
    assert [Path(score["clip"]).name for score in floor] == ["a.wav", "b.wav"]
    # Partials of A (A, A, E, A, C#) against those of Eb (Eb, Eb, Bb, Eb, G): measured 0.07.
    assert all(score["chroma_cosine"] < 0.2 for score in floor)
    rows = {row["system"]: row for row in result["average"]}
    assert rows["other clip"]["clips"] == 2 and rows["reference"]["chroma_cosine"] == pytest.approx(1.0)

    # 0.4 s windows: two per 1 s file, each a clip of its own; the floor of a's second window is a's first.
    main(["--checkpoint", str(tmp_path / "codec"), "--audio", str(tmp_path), "--no-visqol", "--no-opus",
          "--out", str(tmp_path / "windows"), "--window-seconds", "0.4"])
    result = json.loads((tmp_path / "windows" / "codec_eval.json").read_text())
    clips = [Path(score["clip"]).name for score in result["per_clip"] if score["system"] == "codec"]
    assert clips == ["a.wav@0", "a.wav@0.4", "b.wav@0", "b.wav@0.4"]
    floor = {Path(score["clip"]).name: score["chroma_cosine"] for score in result["per_clip"]
             if score["system"] == "other clip"}
    assert floor["a.wav@0.4"] > 0.99 and floor["b.wav@0"] < 0.2
    with pytest.raises(SystemExit, match="longer than every file"):
        main(["--checkpoint", str(tmp_path / "codec"), "--audio", str(tmp_path), "--no-visqol", "--no-opus",
              "--out", str(tmp_path / "bad"), "--window-seconds", "2"])
