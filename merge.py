"""Merge LoRA adapters into their base LM and write a plain LM export.

    python merge.py --checkpoint outputs/demo/lm --adapters outputs/finetune_lora/export/adapter --out outputs/merged
    python merge.py --checkpoint BASE --adapters A B --weights 0.7 0.3 --out DIR     # a weighted combination

The export (lm.safetensors, train_config.yaml, merge.json) is what train.py writes, so generate.py, eval.adherence,
serving and a further `init_from` read it as any LM export; its logits equal the base with the adapters loaded
(lm.lora.merge_adapters). merge.json records the base, each adapter with its weight, and the base's fingerprint.
Each adapter is refused unless it was trained on this base; nothing is written unless everything succeeded.
"""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from builders import lm_export_directory, load_lm_export
from lit.lm_module import WEIGHTS_FILE
from lm.lora import base_fingerprint, merge_adapters

MODEL_PREFIX = "model."  # the LM's keys in an export; the conditioner's keys are copied from the base unchanged


def merge(checkpoint: str | Path, adapters: list[str | Path], out: str | Path,
          weights: list[float] | None = None) -> Path:
    """Write base + weighted adapters, merged, as an LM export in `out` (which must not exist). Returns `out`."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"--out {out} exists already: choose another")
    if not adapters:
        raise ValueError("--adapters: give at least one adapter directory")
    base_directory = lm_export_directory(checkpoint)
    lm, _, _, cfg = load_lm_export(base_directory)
    fingerprint = base_fingerprint(lm)
    merged = merge_adapters(lm, adapters, weights)
    weights_by_name = {name: tensor for name, tensor in load_file(base_directory / WEIGHTS_FILE).items()
                       if not name.startswith(MODEL_PREFIX)}
    weights_by_name.update({MODEL_PREFIX + name: tensor.contiguous() for name, tensor in merged.state_dict().items()})

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))  # renamed to out at the end
    try:
        save_file(weights_by_name, staging / WEIGHTS_FILE)
        OmegaConf.save(cfg, staging / "train_config.yaml", resolve=True)  # bundled paths already made absolute
        record = {"base": str(base_directory.resolve()), "base_sha256": fingerprint,
                  "adapters": [{"path": str(Path(path).resolve()), "weight": weight}
                               for path, weight in zip(adapters, weights or [1.0] * len(adapters))]}
        (staging / "merge.json").write_text(json.dumps(record, indent=2) + "\n")
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the base LM: a run directory or its export/")
    parser.add_argument("--adapters", nargs="+", required=True, help="adapter directories (a run's export/adapter)")
    parser.add_argument("--weights", type=float, nargs="+", help="one scale per adapter (default 1.0 each)")
    parser.add_argument("--out", required=True, help="the merged export's directory (must not exist)")
    args = parser.parse_args(argv)
    try:
        out = merge(args.checkpoint, args.adapters, args.out, args.weights)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
