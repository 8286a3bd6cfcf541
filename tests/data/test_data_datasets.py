import random
from collections import Counter

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

from data.captions import CaptionConfig, make_caption
from data.datasets import (SegmentConfig, SegmentDataset, TokenWindowConfig, TokenWindowDataset, collate_segments,
                           collate_token_windows)
from data.manifest import AudioEntry
from data.token_shards import write_info, write_shard


@pytest.fixture
def entries(tmp_path):
    """Three files whose samples encode (file number, position), so a segment shows where it came from."""
    result = []
    for number, seconds in [(1, 2.0), (2, 3.0), (3, 0.5)]:
        frames = int(8000 * seconds)
        ramp = number * 0.2 + np.arange(frames) / frames * 0.1  # file 1: [0.2, 0.3), file 2: [0.4, 0.5), ...
        path = tmp_path / f"file{number}.wav"
        soundfile.write(path, ramp, 8000, subtype="FLOAT")
        result.append(AudioEntry(path=str(path), duration=seconds, sample_rate=8000, channels=1))
    return result


def segment_config(**overrides) -> SegmentConfig:
    return SegmentConfig(**{"segment_seconds": 1.0, "sample_rate": 8000, "channels": 1, "num_segments": 64,
                            **overrides})


def source_file(wav: torch.Tensor) -> int:
    return int(round(wav[0, 0].item() / 0.2))


def test_segments_are_deterministic_per_seed_epoch_index(entries):
    dataset = SegmentDataset(entries, segment_config())
    first = [dataset[index]["wav"] for index in range(8)]
    again = SegmentDataset(entries, segment_config())
    assert all(torch.equal(a, again[index]["wav"]) for index, a in enumerate(first))
    again.set_epoch(1)
    assert sum(torch.equal(a, again[index]["wav"]) for index, a in enumerate(first)) < 2
    reseeded = SegmentDataset(entries, segment_config(seed=1))
    assert sum(torch.equal(a, reseeded[index]["wav"]) for index, a in enumerate(first)) < 2


def test_segments_do_not_depend_on_worker_count(entries):
    dataset = SegmentDataset(entries, segment_config(num_segments=12))
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=collate_segments)
        batches[workers] = torch.cat([batch["wav"] for batch in loader])  # [12, 1, 8000]
    assert batches[0].shape == (12, 1, 8000)
    assert torch.equal(batches[0], batches[2])


def test_segment_is_a_contiguous_slice_of_one_file(entries):
    dataset = SegmentDataset(entries, segment_config())
    for index in range(16):
        item = dataset[index]
        wav, length = item["wav"], item["length"].item()
        number = source_file(wav)
        steps = wav[0, 1:length] - wav[0, :length - 1]
        frames_in_file = int(8000 * entries[number - 1].duration)
        assert torch.allclose(steps, torch.full_like(steps, 0.1 / frames_in_file), atol=1e-6)


def test_short_files_are_padded_or_skipped(entries):
    padded = SegmentDataset(entries, segment_config(short_files="pad", num_segments=200))
    short_items = [item for item in (padded[index] for index in range(200)) if source_file(item["wav"]) == 3]
    assert short_items, "the 0.5 s file should be drawn with probability 0.5 / 5.5"
    for item in short_items:
        assert item["length"].item() == 4000
        assert torch.count_nonzero(item["wav"][:, 4000:]) == 0
    skipped = SegmentDataset(entries, segment_config(short_files="skip", num_segments=200))
    assert {source_file(skipped[index]["wav"]) for index in range(200)} == {1, 2}


def test_files_are_drawn_in_proportion_to_duration_times_weight(entries):
    weighted = [entries[0], AudioEntry(**{**entries[1].__dict__, "weight": 2.0})]  # 2 s x 1 vs 3 s x 2
    dataset = SegmentDataset(weighted, segment_config(num_segments=800))
    counts = Counter(source_file(dataset[index]["wav"]) for index in range(800))
    assert counts[2] / 800 == pytest.approx(0.75, abs=0.05)


def test_unreadable_file_is_redrawn(entries, caplog):
    broken = AudioEntry(path=entries[0].path + ".missing.wav", duration=3.0, sample_rate=8000)
    dataset = SegmentDataset([broken, entries[1]], segment_config(num_segments=10, max_read_retries=30))
    assert all(source_file(dataset[index]["wav"]) == 2 for index in range(10))
    assert "missing" in caplog.text


def test_caption_dropout_and_description_choice():
    metadata = {"description": "Written by hand.", "genre": "folk", "instrument": "violin", "key": "G major",
                "bpm": 120, "moods": ["lively", "bright"]}
    built = make_caption(metadata, CaptionConfig(description_prob=0.0), random.Random(0))
    assert built == "A lively, bright folk piece played on violin in G major at 120 bpm."
    assert make_caption(metadata, CaptionConfig(description_prob=1.0), random.Random(0)) == "Written by hand."
    no_key = CaptionConfig(description_prob=0.0, field_dropout={"key": 1.0, "moods": 1.0})
    assert make_caption(metadata, no_key, random.Random(0)) == "A folk piece played on violin at 120 bpm."
    everything_dropped = CaptionConfig(description_prob=0.0, field_dropout={name: 1.0 for name in
                                                                            ("moods", "genre", "instrument",
                                                                             "key", "bpm")})
    assert make_caption(metadata, everything_dropped, random.Random(0)) == ""
    half = CaptionConfig(description_prob=0.0, field_dropout={"instrument": 0.3})
    rng = random.Random(0)
    kept = sum("violin" in make_caption(metadata, half, rng) for _ in range(2000))
    assert kept / 2000 == pytest.approx(0.7, abs=0.04)
    with pytest.raises(ValueError, match="field_dropout"):
        CaptionConfig(field_dropout={"tempo": 0.5})


@pytest.fixture
def shard_folder(tmp_path):
    """Two shards; item i's codes are 1000 * i + frame index in every codebook."""
    lengths = [40, 25, 8, 60]
    items = [(f"item{index}.wav", np.stack([1000 * index + np.arange(length)] * 3),
              {"genre": "folk", "instrument": f"instrument{index}", "bpm": 100 + index})
             for index, length in enumerate(lengths)]
    write_info(tmp_path, {"num_codebooks": 3})
    write_shard(tmp_path, 0, items[:2], dtype=np.dtype(np.int16))
    write_shard(tmp_path, 1, items[2:], dtype=np.dtype(np.int16))
    return tmp_path


def token_config(**overrides) -> TokenWindowConfig:
    return TokenWindowConfig(**{"window_frames": 20, "num_windows": 50,
                                "caption": {"description_prob": 0.0, "field_dropout": {}}, **overrides})


def test_token_windows_are_exact_slices_with_their_captions(shard_folder):
    dataset = TokenWindowDataset(str(shard_folder), token_config())
    seen = set()
    for index in range(50):
        item = dataset[index]
        codes = item["codes"]
        assert codes.dtype == torch.int64 and codes.shape == (3, 20)
        source, start = divmod(codes[0, 0].item(), 1000)
        seen.add(source)
        expected = 1000 * source + torch.arange(start, start + 20)
        assert torch.equal(codes, expected.expand(3, -1))
        assert item["attributes"]["instrument"] == f"instrument{source}"
        assert item["attributes"]["bpm"] == str(100 + source)
        assert item["description"] == f"A folk piece played on instrument{source} at {100 + source} bpm."
    assert seen == {0, 1, 3}  # item 2 (8 frames) is shorter than a window


def test_token_windows_are_deterministic_and_batch(shard_folder):
    first = TokenWindowDataset(str(shard_folder), token_config())
    second = TokenWindowDataset(str(shard_folder), token_config())
    assert all(torch.equal(first[index]["codes"], second[index]["codes"]) for index in range(20))
    second.set_epoch(3)
    assert sum(torch.equal(first[index]["codes"], second[index]["codes"]) for index in range(20)) < 4
    batch = collate_token_windows([first[index] for index in range(4)])
    assert batch["codes"].shape == (4, 3, 20)
    assert batch["description"] == [first[index]["description"] for index in range(4)]
    with pytest.raises(ValueError, match="window_frames=100"):
        TokenWindowDataset(str(shard_folder), token_config(window_frames=100))


def test_positions_past_the_end_read_the_next_epochs(entries):
    dataset = SegmentDataset(entries, segment_config())
    size = len(dataset)
    first_of_epoch_two = dataset[2 * size + 1]["wav"]
    dataset.set_epoch(2)
    torch.testing.assert_close(first_of_epoch_two, dataset[1]["wav"])
    dataset.set_epoch(0)
    assert not torch.equal(dataset[size + 1]["wav"], dataset[1]["wav"])
