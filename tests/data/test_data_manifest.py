import gzip
import json
import random

import numpy as np
import soundfile

from data.captions import CaptionConfig, make_caption
from data.datasets import SegmentConfig, SegmentDataset
from data.manifest import AudioEntry, read_manifest, read_sidecar, write_manifest
from data.scan import main as scan_main
from data.scan import scan_folder

ENTRIES = [
    AudioEntry(path="/data/a.wav", duration=12.5, sample_rate=32000, channels=2, amplitude=0.7, weight=2.0),
    AudioEntry(path="/data/b.flac", duration=3.0, sample_rate=44100),
]


def test_manifest_round_trip_plain_and_gzip(tmp_path):
    for name in ("data.jsonl", "data.jsonl.gz"):
        write_manifest(tmp_path / name, ENTRIES)
        assert read_manifest(tmp_path / name) == ENTRIES
    with gzip.open(tmp_path / "data.jsonl.gz", "rt") as lines:
        assert json.loads(lines.readline())["duration"] == 12.5
    first = (tmp_path / "data.jsonl.gz").read_bytes()
    write_manifest(tmp_path / "data.jsonl.gz", ENTRIES)
    assert (tmp_path / "data.jsonl.gz").read_bytes() == first  # no timestamp in the gzip header


def test_split_folder_resolves_to_its_manifest(tmp_path):
    write_manifest(tmp_path / "train" / "data.jsonl.gz", ENTRIES)
    assert read_manifest(tmp_path / "train") == ENTRIES


def test_audiocraft_layout_loads_with_metadata(tmp_path, monkeypatch):
    """egs/<split>/data.jsonl with AudioCraft's fields and repo-relative paths, sidecar .json beside the audio."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dataset").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for name, seconds in [("electro_1", 2.0), ("folk_2", 1.5)]:
        soundfile.write(tmp_path / "dataset" / f"{name}.wav", rng.uniform(-0.3, 0.3, (int(32000 * seconds), 2)),
                        32000)
        lines.append({"path": f"dataset/{name}.wav", "duration": seconds, "sample_rate": 32000,
                      "amplitude": None, "weight": None, "info_path": None})
        (tmp_path / "dataset" / f"{name}.json").write_text(json.dumps({
            "key": "", "artist": "", "sample_rate": 32000, "file_extension": "wav", "description": f"{name} music",
            "keywords": "", "duration": seconds, "bpm": "", "genre": name.split("_")[0], "title": name,
            "name": name, "instrument": "Mix", "moods": ["energetic"]}))
    (tmp_path / "egs" / "train").mkdir(parents=True)
    (tmp_path / "egs" / "train" / "data.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    entries = read_manifest("egs/train")
    assert [entry.path for entry in entries] == [str((tmp_path / f"dataset/{n}.wav").resolve())
                                                for n in ("electro_1", "folk_2")]
    assert entries[0].duration == 2.0 and entries[0].channels is None
    metadata = read_sidecar(entries[1].path)
    assert metadata["genre"] == "folk" and metadata["moods"] == ["energetic"]
    built = make_caption(metadata, CaptionConfig(description_prob=0.0), random.Random(0))
    assert built == "An energetic folk piece played on Mix."  # empty key and bpm are absent, not "in "
    assert make_caption(metadata, CaptionConfig(description_prob=1.0), random.Random(0)) == "folk_2 music"

    dataset = SegmentDataset(entries, SegmentConfig(segment_seconds=1.0, sample_rate=24000, channels=1,
                                                    num_segments=4))
    item = dataset[0]
    assert item["wav"].shape == (1, 24000) and item["length"].item() == 24000
    assert item["wav"].abs().max() > 0.05


def write_sine(path, sample_rate, seconds, subtype=None):
    time = np.arange(int(sample_rate * seconds)) / sample_rate
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 440 * time), sample_rate, subtype=subtype)


def test_scan_skips_and_counts_bad_files_and_keeps_good_ones(tmp_path, caplog):
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    write_sine(folder / "good.wav", 24000, 1.0)
    write_sine(folder / "sub" / "odd_rate.flac", 22050, 0.5)  # unusual but usable: kept, resampled at load
    write_sine(folder / "too_low_rate.wav", 4000, 1.0)
    soundfile.write(folder / "empty.wav", np.zeros((0, 1)), 24000)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    (folder / "truncated.mp3").write_bytes(b"\xff\xfb" + bytes(range(256)))
    (folder / "notes.txt").write_text("not audio")

    result = scan_folder(folder)
    assert sorted(entry.path.rsplit("/", 1)[1] for entry in result.entries) == ["good.wav", "odd_rate.flac"]
    assert dict(result.skipped) == {"unreadable": 2, "empty": 1, "sample rate below 8000 Hz": 1}
    assert "kept 2 files" in result.summary() and "skipped 4" in result.summary()
    assert sum("corrupt.wav" in record.message for record in caplog.records) == 1
    odd = next(entry for entry in result.entries if entry.path.endswith(".flac"))
    assert (odd.sample_rate, odd.channels, odd.duration) == (22050, 1, 0.5)
    assert abs(odd.amplitude - 0.5) < 1e-3

    out = tmp_path / "manifest.jsonl.gz"
    assert scan_main([str(folder), "--out", str(out)]) == 0
    entries = read_manifest(out)
    assert entries == result.entries
    dataset = SegmentDataset(entries, SegmentConfig(segment_seconds=0.25, sample_rate=24000, channels=1,
                                                    num_segments=8, short_files="skip"))
    assert all(dataset[index]["wav"].abs().max() > 0.4 for index in range(8))


def test_scan_of_missing_folder_exits_non_zero(tmp_path, capsys):
    assert scan_main([str(tmp_path / "nope"), "--out", str(tmp_path / "m.jsonl")]) == 1
    assert "nope" in capsys.readouterr().err
