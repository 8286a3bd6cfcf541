import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from data.manifest import read_manifest, read_sidecar

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
missing = [name for name in ("music21", "tinysoundfont") if importlib.util.find_spec(name) is None]
pytestmark = [
    pytest.mark.skipif(bool(missing), reason=f"default-data build needs pip packages {missing}"),
    pytest.mark.skipif(not SOUNDFONT.is_file(), reason=f"{SOUNDFONT} missing (apt-get install timgm6mb-soundfont)"),
]
PITCH_CLASSES = {"C": 0, "C#": 1, "Db": 1, "D": 2, "Eb": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "G#": 8, "Ab": 8,
                 "A": 9, "Bb": 10, "B": 11}


def tiny_config(out: Path, workers: int):
    from data.build_default import load_build_config

    # Three pieces (chorale, folk tune, chorale), one 4 s clip each: one per split.
    return load_build_config(out=str(out), minutes=0.2, clip_seconds=4.0, min_clip_seconds=2.0,
                             max_clips_per_piece=1, workers=workers)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    from data.build_default import build_default

    folder = tmp_path_factory.mktemp("default")
    build_default(tiny_config(folder / "one_worker", workers=1))
    build_default(tiny_config(folder / "two_workers", workers=2))
    return folder / "one_worker", folder / "two_workers"


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_build_is_byte_identical_whatever_the_worker_count(builds):
    one, two = (file_bytes(root) for root in builds)
    assert len([name for name in one if name.endswith(".wav")]) == 3
    assert one == two


def test_splits_are_per_composition_and_manifests_match_the_audio(builds):
    root = builds[0]
    sources = {}
    for split in ("train", "valid", "test"):
        entries = read_manifest(root / split)
        assert len(entries) == 1
        for entry in entries:
            samples, sample_rate = soundfile.read(entry.path)
            assert sample_rate == entry.sample_rate == 24000
            assert len(samples) / sample_rate == entry.duration == 4.0
            assert np.abs(samples).max() == pytest.approx(entry.amplitude, abs=1e-4)
            rms_db = 20 * np.log10(np.sqrt(np.mean(samples ** 2)))
            assert -26 < rms_db < -14  # rendered at -20 dBFS per piece; a clip is part of its piece
            sources.setdefault(read_sidecar(entry.path)["source"], set()).add(split)
    assert len(sources) == 3 and all(len(splits) == 1 for splits in sources.values())
    assert json.loads((root / "build.json").read_text())["clips"] == {"train": 1, "valid": 1, "test": 1}


FRAME = 2048  # samples per analysis frame (85 ms at 24 kHz)


def pitchgram(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log energy per (frame, MIDI pitch): FFT bins of Hann-windowed frames summed per nearest semitone."""
    frames = np.lib.stride_tricks.sliding_window_view(samples, 2 * FRAME)[::FRAME] * np.hanning(2 * FRAME)
    power = np.abs(np.fft.rfft(frames, axis=1))[:, 1:] ** 2  # [frames, bins]
    frequencies = np.fft.rfftfreq(2 * FRAME, 1 / sample_rate)[1:]
    pitches = np.clip(np.round(12 * np.log2(frequencies / 440) + 69).astype(int), 0, 127)
    energy = np.stack([np.bincount(pitches, weights=frame, minlength=128) for frame in power])
    return np.log(energy + 1e-6)


def piano_roll(notes, seconds_per_quarter: float, shift: int, num_frames: int, frame_seconds: float) -> np.ndarray:
    """1 where a note (timed in quarters) sounds at the given tempo, moved by `shift`, per (frame, MIDI pitch)."""
    roll = np.zeros((num_frames, 128))
    for note in notes:
        onset, offset = note.onset * seconds_per_quarter, (note.onset + note.duration) * seconds_per_quarter
        roll[int(onset / frame_seconds):int(offset / frame_seconds) + 1, note.pitch + shift] = 1
    return roll[:num_frames]


def test_captions_agree_with_the_rendered_audio(builds):
    from music21 import corpus

    from data.build_default import score_notes

    for split in ("train", "valid", "test"):
        entry = read_manifest(builds[0] / split)[0]
        metadata = read_sidecar(entry.path)
        tonic, mode = metadata["key"].split()
        score_tonic, score_mode = metadata["score_key"].split()
        assert mode == score_mode
        assert PITCH_CLASSES[tonic] == (PITCH_CLASSES[score_tonic] + metadata["transposition"]) % 12
        for stated in (metadata["key"], f"{metadata['bpm']} bpm", metadata["instrument"]):
            assert stated in metadata["description"]

        # The audio follows the score moved by the stated transposition, at the stated tempo: its pitch-time
        # energy matches that piano roll better than any other shift or a 10% faster or slower tempo.
        samples, sample_rate = soundfile.read(entry.path)
        energy = pitchgram(samples, sample_rate)[:, 24:108]  # [frames, pitches 24..107]
        notes = score_notes(corpus.parse(metadata["source"].split()[-1]), seconds_per_quarter=1.0, transposition=0)

        def match(bpm: float, shift: int) -> float:
            roll = piano_roll(notes, 60 / bpm, shift, num_frames=len(energy), frame_seconds=FRAME / sample_rate)
            return np.corrcoef(energy.ravel(), roll[:, 24:108].ravel())[0, 1]

        stated_bpm, stated_shift = metadata["bpm"], metadata["transposition"]
        by_shift = {shift: match(stated_bpm, shift) for shift in range(-6, 7)}
        assert max(by_shift, key=by_shift.get) == stated_shift, (metadata, by_shift)
        assert match(stated_bpm, stated_shift) > max(match(stated_bpm * 0.9, stated_shift),
                                                     match(stated_bpm * 1.1, stated_shift))
