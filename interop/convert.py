"""Convert reference checkpoints to codeclm exports, and codeclm exports back to HF directories.

    python -m interop.convert SRC --out DIR                 # HF MusicGen(-Melody) / EnCodec directory, or AudioCraft
    python -m interop.convert weights_24khz.pth --out DIR   # a DAC weights file -> codec export
    python -m interop.convert snac_24khz --out DIR          # a SNAC directory -> SNACCodec directory (codec/snac.py)
    python -m interop.convert SRC --out DIR --codec CODEC   # AudioCraft folder whose codec is a `pretrained` redirect
    python -m interop.convert RUN --to hf --out DIR         # our LM export (or codec export) -> HF directory

The source format is read from SRC's files, or from its suffix when SRC is a file (`detect_format`). DIR must not
exist: the conversion is written to a hidden folder beside it and renamed only once complete, so a failed
conversion leaves nothing behind. Bad input is one line on stderr naming the file, key or option, and exit status 1.
"""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from interop.state import ConversionError

FORMATS = {
    "hf_musicgen": "an HF MusicgenForConditionalGeneration directory (config.json model_type 'musicgen')",
    "hf_musicgen_melody": "an HF MusicgenMelodyForConditionalGeneration directory (config.json model_type "
                          "'musicgen_melody')",
    "hf_encodec": "an HF EncodecModel directory (config.json model_type 'encodec')",
    "audiocraft": "an AudioCraft folder (state_dict.bin and compression_state_dict.bin)",
    "lm_export": "a codeclm LM export (train_config.yaml and lm.safetensors, or a run directory with export/)",
    "codec_export": "a codeclm codec export (config.json and model.safetensors written by Codec.save)",
    "dac": "a DAC weights file (.pth with 'state_dict' and 'metadata', written by DAC.save(path, package=False))",
    "snac": "a SNAC directory (config.json with snac.SNAC's arguments, 'vq_strides' among them, + pytorch_model.bin)",
}


def detect_format(source: Path) -> str:
    """One of FORMATS, read from the files in `source`; ConversionError naming what was expected otherwise."""
    if source.is_file() and source.suffix == ".pth":
        return "dac"
    if not source.is_dir():
        raise ConversionError(f"{source}: neither a checkpoint folder nor a DAC .pth file")
    if (source / "state_dict.bin").is_file():
        return "audiocraft"
    if (source / "train_config.yaml").is_file() or (source / "export" / "train_config.yaml").is_file():
        return "lm_export"
    config_file = source / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as error:
            raise ConversionError(f"{config_file}: not valid JSON ({error})") from error
        model_type = config.get("model_type")
        if model_type == "musicgen":
            return "hf_musicgen"
        if model_type == "musicgen_melody":
            return "hf_musicgen_melody"
        if model_type == "encodec":
            return "hf_encodec"
        if "seanet" in config and "quantizer" in config:
            return "codec_export"
        if "vq_strides" in config:  # SNAC's config.json is its constructor's arguments, with no model_type
            return "snac"
        raise ConversionError(f"{config_file}: model_type {model_type!r} is none of 'musicgen', 'musicgen_melody', "
                              f"'encodec'")
    expected = "; ".join(FORMATS.values())
    raise ConversionError(f"{source}: not a checkpoint folder codeclm reads. Expected {expected}")


def convert(source: Path, out: Path, to: str | None = None, codec: Path | None = None,
            text_encoder: Path | None = None) -> str:
    """Convert `source` into `out` (written atomically); returns the detected source format."""
    source_format = detect_format(source)
    if to == "hf" and source_format not in ("lm_export", "codec_export"):
        raise ConversionError(f"{source}: --to hf takes a codeclm export, got {FORMATS[source_format]}")
    if to is None and source_format in ("lm_export", "codec_export"):
        raise ConversionError(f"{source} is already a codeclm export: add --to hf to export it to HF's layout")
    if out.exists():
        raise ConversionError(f"--out {out} exists already: choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        target = staging / "out"
        if source_format == "hf_musicgen":
            from interop.musicgen import convert_hf_musicgen
            convert_hf_musicgen(source, target)
        elif source_format == "hf_musicgen_melody":
            from interop.musicgen_melody import convert_hf_musicgen_melody
            convert_hf_musicgen_melody(source, target)
        elif source_format == "hf_encodec":
            from interop.encodec import convert_hf_encodec
            convert_hf_encodec(source, target)
        elif source_format == "dac":
            from interop.dac import convert_dac
            convert_dac(source, target)
        elif source_format == "snac":
            from interop.snac import convert_snac
            convert_snac(source, target)
        elif source_format == "audiocraft":
            from interop.audiocraft import convert_audiocraft
            convert_audiocraft(source, target, codec=codec, text_encoder=text_encoder)
        elif source_format == "lm_export":
            from interop.musicgen import export_hf_musicgen
            export_hf_musicgen(source, target)
        else:
            from interop.encodec import codec_to_hf
            codec_to_hf(source, target)
        target.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return source_format


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m interop.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the checkpoint folder (or DAC .pth file) to convert")
    parser.add_argument("--out", type=Path, required=True, help="the directory to write (must not exist)")
    parser.add_argument("--to", choices=["hf"], help="export a codeclm export to HF's layout")
    parser.add_argument("--codec", type=Path, help="AudioCraft: the HF EnCodec directory a `pretrained` codec "
                                                   "redirect names (e.g. a download of facebook/encodec_32khz)")
    parser.add_argument("--text-encoder", type=Path, help="AudioCraft: a local T5 directory (encoder + tokenizer) "
                                                          "for the checkpoint's T5 conditioner (e.g. t5-base)")
    args = parser.parse_args(argv)
    try:
        source_format = convert(args.source, args.out, to=args.to, codec=args.codec, text_encoder=args.text_encoder)
    except (ConversionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"converted {source_format} {args.source} -> {args.out}")


if __name__ == "__main__":
    main()
