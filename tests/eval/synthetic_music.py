"""Synthetic test audio with known key, tempo and timbre: harmonic tones, in torch."""
import math

import torch

SAMPLE_RATE = 24_000
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 11)


def tone(frequency: float, seconds: float, timbre: str = "harmonic", sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """[T] a note with an exponential decay; timbre 'harmonic' (1/k partials), 'sine', 'square' or 'sawtooth'."""
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * math.pi * frequency * t
    if timbre == "sine":
        wave = torch.sin(phase)
    elif timbre == "harmonic":
        wave = sum(torch.sin(k * phase) / k for k in range(1, 5))
    elif timbre == "square":
        wave = torch.sign(torch.sin(phase))
    elif timbre == "sawtooth":
        wave = 2 * torch.remainder(frequency * t, 1.0) - 1
    else:
        raise ValueError(f"unknown timbre {timbre!r}")
    return wave * torch.exp(-3 * t)


def midi_frequency(pitch: int) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def cadence(tonic: int, mode: str, bpm: float, seconds: float, timbre: str = "harmonic") -> torch.Tensor:
    """[T] the triads on scale degrees 1, 4, 5, 1 of the key (tonic pitch class, mode), one chord per beat at
    `bpm` from middle C up, each over the tonic an octave below; the four chords loop until `seconds`."""
    scale = MAJOR_SCALE if mode == "major" else HARMONIC_MINOR_SCALE
    base = 60 + tonic
    beat = 60.0 / bpm
    total = int(seconds * SAMPLE_RATE)
    audio = torch.zeros(total)
    for index in range(int(seconds / beat) + 1):
        root = (0, 3, 4, 0)[index % 4]
        pitches = [base - 12] + [base + scale[(root + step) % 7] + 12 * ((root + step) // 7) for step in (0, 2, 4)]
        start = int(index * beat * SAMPLE_RATE)
        if start >= total:
            break
        for pitch in pitches:
            note = tone(midi_frequency(pitch), beat, timbre)[:total - start]
            audio[start:start + len(note)] += note
    return 0.1 * audio
