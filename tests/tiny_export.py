"""A random tiny LM export with its codec, saved without training: the model of the pipeline and server tests."""
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from builders import build_codec, build_conditioner, build_lm, build_lm_training, build_pattern
from lit.lm_module import BatchConditioner, LMLightningModule

ROOT = Path(__file__).resolve().parents[1]


def save_tiny_export(root: Path, *overrides: str) -> Path:
    """A random tiny LM (2 layers, card 256, MiniLM text conditioner unless `overrides` change it) and a random tiny
    causal codec (24 kHz mono, 75 Hz) saved under `root`; the pipeline and server tests' model. Returns the export."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["stage=lm", "codec.quantizer.codebook_size=256",
                                                       "lm.model.num_layers=2", f"codec_dir={root / 'codec'}",
                                                       *overrides])
    torch.manual_seed(0)
    build_codec(cfg).save(root / "codec")
    module = LMLightningModule(build_lm(cfg), build_pattern(cfg), build_lm_training(cfg),
                               conditioner=BatchConditioner(build_conditioner(cfg)))
    with torch.no_grad():
        module.model.heads.weight.mul_(4)  # peakier than uniform, so that sampling and guidance matter
    module.save(root / "lm")
    OmegaConf.save(cfg, root / "lm" / "train_config.yaml", resolve=True)
    return root / "lm"
