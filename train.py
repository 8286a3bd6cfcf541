"""Train the codec or the LM from the Hydra config (configs/config.yaml).

    python train.py stage=codec experiment=demo
    python train.py stage=lm experiment=demo
    python train.py stage=tts experiment=tts_demo                      # the text-to-speech LM on SNAC tokens
    python train.py stage=lm experiment=demo resume=true hydra.run.dir=outputs/demo/lm   # continue a killed run
    python train.py stage=lm experiment=finetune_lora init_from=outputs/demo/lm          # LoRA on a trained LM
    python train.py -m stage=lm experiment=demo lm.pattern.kind=delay,parallel           # a sweep

The run directory (Hydra's output dir) holds the resolved config, TensorBoard logs (tensorboard/), Lightning
checkpoints (checkpoints/: periodic and last.ckpt, written atomically) and, at the end, export/: the weights as
safetensors with the resolved config beside them (a LoRA run, `lora` set: the merged LM, and the adapter alone in
export/adapter/, docs/finetune.md).
"""
import logging
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from builders import (
    add_lora,
    build_codec,
    build_codec_loss,
    build_conditioner,
    build_generation,
    build_lm,
    build_lm_training,
    build_lora,
    build_pattern,
    build_segment_datasets,
    build_token_datasets,
    build_tts,
    build_tts_datasets,
    build_tts_format,
    build_tts_generation,
    build_tts_samples,
    build_tts_training,
    fill_tts_speakers,
    init_from_export,
    plain,
)
from data.datasets import collate_segments, collate_token_windows
from lit.callbacks import StepSeed, TTSValidationSamples, ValidationSamples
from lit.codec_module import CodecModule
from lit.datamodule import StreamDataModule
from lit.lm_module import ADAPTER_DIRECTORY, BatchConditioner, LMLightningModule
from lit.tts_module import TTSLightningModule
from lm.lora import adapter_size

logger = logging.getLogger(__name__)


def build_stage(cfg: DictConfig) -> tuple[pl.LightningModule, StreamDataModule]:
    """The stage's Lightning module and data. With `lora` set, the LM gets adapters after `init_from`'s weights
    are loaded and before a resumed checkpoint is (trainer.fit), so the checkpoint's lora_ keys find their modules."""
    lora = build_lora(cfg)
    if cfg.stage == "codec":
        module = CodecModule(build_codec(cfg), build_codec_loss(cfg))
        (train, valid), collate = build_segment_datasets(cfg), collate_segments
    elif cfg.stage == "lm":
        module = LMLightningModule(build_lm(cfg), build_pattern(cfg), build_lm_training(cfg),
                                   conditioner=BatchConditioner(build_conditioner(cfg)))
        if cfg.init_from is not None:
            init_from_export(module, cfg)
        if lora is not None:
            add_lora(module, lora)
        (train, valid), collate = build_token_datasets(cfg), collate_token_windows
    elif cfg.stage == "tts":
        if cfg.init_from is not None:
            raise ValueError(f"init_from={cfg.init_from} is for stage=lm; stage=tts trains its model from scratch")
        fill_tts_speakers(cfg)
        tts_format = build_tts_format(cfg)
        module = TTSLightningModule(build_tts(cfg, tts_format), build_tts_training(cfg))
        train, valid = build_tts_datasets(cfg, tts_format)
        collate = train.collate
    else:
        raise ValueError(f"stage must be 'codec', 'lm' or 'tts', got {cfg.stage!r}")
    loader = cfg.data.loader
    return module, StreamDataModule(train, valid, loader.batch_size, loader.num_workers, collate_fn=collate)


def train(cfg: DictConfig) -> Path:
    """Runs one training; returns the run directory."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    resume_from = latest_checkpoint(run_dir / "checkpoints") if cfg.resume else None
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True)
    module, datamodule = build_stage(cfg)
    callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", every_n_train_steps=cfg.checkpoint_every_n_steps,
                        save_last=True, save_top_k=-1),
        StepSeed(cfg.seed),
    ]
    if cfg.stage == "lm" and cfg.codec_dir is not None:
        callbacks.append(ValidationSamples(cfg.codec_dir, list(cfg.samples.prompts), cfg.samples.seconds,
                                           build_generation(cfg.generation), seed=cfg.seed))
    if cfg.stage == "tts" and cfg.codec_dir is not None:  # build_stage has filled tts.format.speakers
        callbacks.append(TTSValidationSamples(cfg.codec_dir, build_tts_format(cfg), build_tts_samples(cfg),
                                              build_tts_generation(cfg), seed=cfg.seed))
    trainer = pl.Trainer(
        **plain(cfg.trainer),
        default_root_dir=run_dir,
        logger=TensorBoardLogger(run_dir, name="tensorboard", version=""),
        callbacks=callbacks,
        use_distributed_sampler=False,  # StreamDataModule shards the stream across ranks itself
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    if trainer.is_global_zero:
        export(module, cfg, run_dir / "export")
    return run_dir


def latest_checkpoint(directory: Path) -> str:
    """The newest complete checkpoint: last.ckpt, or a periodic one written after it (a kill can fall between)."""
    checkpoints = sorted(directory.glob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    if not checkpoints:
        raise FileNotFoundError(f"resume=true but {directory} holds no checkpoint: pass the killed run's hydra.run.dir")
    return str(checkpoints[-1])


def export(module: pl.LightningModule, cfg: DictConfig, directory: Path) -> None:
    """Weights as safetensors with the resolved config beside them (what generate.py and extraction load)."""
    if cfg.stage == "codec":
        module.codec.save(directory)
    else:
        module.save(directory)
    OmegaConf.save(cfg, directory / "train_config.yaml", resolve=True)
    logger.info("exported %s to %s", cfg.stage, directory)
    if cfg.stage == "lm" and cfg.lora is not None:
        adapter = directory / ADAPTER_DIRECTORY
        size = sum(path.stat().st_size for path in adapter.iterdir())
        counts = adapter_size(module.model)
        logger.info("adapter in %s: %d bytes, %d parameters (%.2f%% of the LM's)", adapter, size, counts.adapter,
                    100 * counts.fraction)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
