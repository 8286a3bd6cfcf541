"""Audio data for codec and LM training: files -> manifests -> segments / code windows.

    audio.py           read (soundfile), resample, mix channels, normalise, write: wav [C, T] float32
    manifest.py        AudioCraft-layout manifests (split/data.jsonl[.gz]) and sidecar .json metadata
    scan.py            python -m data.scan DIR --out M: a manifest from a folder, bad files skipped and counted
    datasets.py        SegmentDataset (codec) and TokenWindowDataset (LM), seeded per (seed, epoch, index)
    captions.py        text prompts from metadata, with per-field dropout
    token_shards.py    on-disk layout of extracted codes
    extract_tokens.py  python -m data.extract_tokens: manifest -> code shards with a trained codec, resumable
    synth.py           notes -> audio with a General-MIDI SoundFont
    build_default.py   python -m data.build_default: the built-in dataset from music21's corpus
"""
