"""A random tiny TTS export with its tiny SNAC codec, saved without training: the model of the speech pipeline and
generate.py speaking tests."""
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from builders import build_codec, build_tts, build_tts_format, build_tts_training
from lit.tts_module import TTSLightningModule

ROOT = Path(__file__).resolve().parents[1]
SPEAKERS = ["en-029+f5", "en-gb+f4", "en-us+m3"]  # as stage=tts fills tts.format.speakers: sorted


def save_tiny_tts_export(root: Path, *overrides: str, speakers: list[str] = SPEAKERS) -> Path:
    """A random tiny TTS LM (1 layer of width 32, at most 4 coarse frames per utterance) with `speakers`, and a
    random configs/codec/snac_tiny.yaml codec, saved under `root` (root/codec, root/tts/export). Returns the run
    directory root/tts."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "stage=tts", "codec=snac_tiny", "tts=tiny", "tts.model.dim=32", "tts.model.num_layers=1",
            "tts.model.ffn_dim=64", "tts.generation.max_audio_frames=4", f"codec_dir={root / 'codec'}", *overrides])
    cfg.tts.format.speakers = speakers
    torch.manual_seed(0)
    build_codec(cfg).eval().save(root / "codec")
    tts_format = build_tts_format(cfg)
    module = TTSLightningModule(build_tts(cfg, tts_format), build_tts_training(cfg))
    module.save(root / "tts" / "export")
    OmegaConf.save(cfg, root / "tts" / "export" / "train_config.yaml", resolve=True)
    return root / "tts"
