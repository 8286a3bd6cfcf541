"""Reference checkpoints in and out: one module per reference format, and the `convert` CLI.

    state.py     reading weight files lazily; strict key renaming (every source key mapped, or a ConversionError)
    encodec.py   EnCodec: HF `EncodecModel` directories and AudioCraft / `encodec` package state dicts <-> Codec
    musicgen.py  MusicGen: HF `MusicgenForConditionalGeneration` directories <-> LM exports
    audiocraft.py  AudioCraft `state_dict.bin` / `compression_state_dict.bin` folders -> LM exports
    dac.py       DAC (descript-audio-codec) weights files -> Codec exports
    convert.py   `python -m interop.convert SRC --out DIR [--to hf]`: detects the format, writes atomically

docs/interop.md has the key maps and the semantic switches the references need.
"""
