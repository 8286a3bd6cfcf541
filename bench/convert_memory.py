"""Peak memory of `interop.convert` on an HF MusicGen directory vs HF's own `from_pretrained` of the same folder.

    python -m bench.convert_memory                     # a random MusicGen of 12 layers x 1024 (about 1 GB)
    python -m bench.convert_memory --layers 24         # musicgen-small's decoder size

Each measurement runs in a fresh process and reports the peak resident memory added to what the process held
after its imports (`ru_maxrss` minus the resident size before the work), as a multiple of the checkpoint's
size on disk. The last line is JSON.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = """
import resource, sys
from pathlib import Path
{imports}
def resident_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = resident_kib()
{work}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
CONVERT = ("from interop.convert import convert", "convert(Path(sys.argv[1]), Path(sys.argv[2]))")
HF_LOAD = ("from transformers import MusicgenForConditionalGeneration",
           "MusicgenForConditionalGeneration.from_pretrained(sys.argv[1])")


def build_checkpoint(directory: Path, layers: int, width: int) -> int:
    """A random HF MusicGen directory (T5-base-sized text encoder, 32 kHz EnCodec); returns its bytes on disk."""
    import torch
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, T5Config)

    from interop.tiny import train_t5_tokenizer

    torch.manual_seed(0)
    config = MusicgenConfig(
        text_encoder=T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
        audio_encoder=EncodecConfig(sampling_rate=32000, num_filters=64, upsampling_ratios=[8, 5, 4, 4],
                                    codebook_size=2048, target_bandwidths=[2.2], use_conv_shortcut=False,
                                    use_causal_conv=False),
        decoder=MusicgenDecoderConfig(vocab_size=2048, num_codebooks=4, hidden_size=width, num_hidden_layers=layers,
                                      num_attention_heads=16, ffn_dim=4 * width))
    MusicgenForConditionalGeneration(config).save_pretrained(directory)
    train_t5_tokenizer().save_pretrained(directory)
    return sum(path.stat().st_size for path in directory.iterdir() if path.name.endswith(".safetensors"))


def peak_kib(imports_and_work: tuple[str, str], *args: str) -> int:
    imports, work = imports_and_work
    script = MEASURE.format(imports=imports, work=work)
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    return int(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "hf"
        checkpoint_bytes = build_checkpoint(source, args.layers, args.width)
        convert_kib = peak_kib(CONVERT, str(source), str(Path(scratch) / "converted"))
        hf_kib = peak_kib(HF_LOAD, str(source))
    size_kib = checkpoint_bytes / 1024
    print(f"checkpoint {checkpoint_bytes / 2**30:.2f} GiB: interop.convert peak +{convert_kib / 2**20:.2f} GiB "
          f"({convert_kib / size_kib:.2f}x), HF from_pretrained +{hf_kib / 2**20:.2f} GiB ({hf_kib / size_kib:.2f}x)")
    print(json.dumps({"layers": args.layers, "width": args.width, "checkpoint_gib": round(checkpoint_bytes / 2**30, 3),
                      "convert_peak_ratio": round(convert_kib / size_kib, 2),
                      "hf_from_pretrained_peak_ratio": round(hf_kib / size_kib, 2)}))


if __name__ == "__main__":
    main()
