"""Render note lists to audio offline with a General-MIDI SoundFont (tinysoundfont).

TinySoundFont is deterministic: the same notes, program and sample rate give the same samples, which is what
makes the default dataset byte-reproducible.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# General-MIDI program numbers (0-based) of the instruments the default dataset may use, with caption names.
GM_INSTRUMENTS = {
    0: "piano", 6: "harpsichord", 19: "church organ", 21: "accordion", 24: "acoustic guitar", 40: "violin",
    42: "cello", 46: "harp", 48: "string ensemble", 52: "choir", 56: "trumpet", 61: "brass section",
    68: "oboe", 71: "clarinet", 73: "flute", 75: "pan flute",
}
DRUM_CHANNEL = 9  # GM reserves MIDI channel 10 for percussion
MELODIC_CHANNELS = [channel for channel in range(16) if channel != DRUM_CHANNEL]
# Notes sound for this fraction of their written length, so repeated notes are re-articulated.
ARTICULATION = 0.95


@dataclass(frozen=True)
class Note:
    onset: float  # seconds
    duration: float  # seconds
    pitch: int  # MIDI key, 60 = middle C
    velocity: int  # 1..127
    voice: int  # notes of one voice share a MIDI channel


def render_notes(notes: list[Note], program: int, sample_rate: int, soundfont: str | Path,
                 release_seconds: float = 1.0) -> np.ndarray:
    """Mono float32 [T] of every note played with GM `program`, plus `release_seconds` of decay at the end."""
    import tinysoundfont  # optional dependency: only the default-dataset build needs it

    if program not in GM_INSTRUMENTS:
        raise ValueError(f"program must be one of {sorted(GM_INSTRUMENTS)}, got {program}")
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    soundfont_id = synth.sfload(str(soundfont))
    voices = sorted({note.voice for note in notes})
    if len(voices) > len(MELODIC_CHANNELS):
        raise ValueError(f"at most {len(MELODIC_CHANNELS)} voices can be rendered, got {len(voices)}")
    channel_of = {voice: MELODIC_CHANNELS[index] for index, voice in enumerate(voices)}
    for channel in channel_of.values():
        synth.program_select(channel, soundfont_id, 0, program)

    # (sample, 0 = off / 1 = on, channel, pitch, velocity): note-offs sort before note-ons at the same sample.
    events = []
    for note in notes:
        start = int(round(note.onset * sample_rate))
        stop = max(start + 1, int(round((note.onset + note.duration * ARTICULATION) * sample_rate)))
        events.append((start, 1, channel_of[note.voice], note.pitch, note.velocity))
        events.append((stop, 0, channel_of[note.voice], note.pitch, 0))
    events.sort()

    blocks, cursor = [], 0
    for sample, is_on, channel, pitch, velocity in events:
        if sample > cursor:
            blocks.append(np.frombuffer(synth.generate(sample - cursor), dtype=np.float32).copy())
            cursor = sample
        if is_on:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    blocks.append(np.frombuffer(synth.generate(int(release_seconds * sample_rate)), dtype=np.float32).copy())
    stereo = np.concatenate(blocks).reshape(-1, 2)  # interleaved [T, 2]
    return stereo.mean(axis=1)
