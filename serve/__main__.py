"""python -m serve checkpoint=DIR: the HTTP API and web page (serve/app.py) under uvicorn; configs/serve.yaml.

A configuration or checkpoint that cannot serve (unknown checkpoint, invalid sampling defaults or limits) is one
line on stderr and exit status 1, before the port is opened.
"""
import sys

import hydra
import transformers
import uvicorn
from omegaconf import DictConfig

from builders import build_codec_backend, build_decode_backend, build_generation
from generate import pick_device
from pipeline import GenerationPipeline
from serve.app import create_app
from serve.config import ServeLimits


@hydra.main(config_path="../configs", config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    transformers.utils.logging.disable_progress_bar()
    try:
        pipeline = GenerationPipeline.load(cfg.checkpoint, pick_device(cfg.device), cfg.codec_dir,
                                           build_generation(cfg), build_decode_backend(cfg), build_codec_backend(cfg))
        app = create_app(pipeline, ServeLimits(**cfg.limits))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    uvicorn.run(app, host=cfg.host, port=cfg.port)


if __name__ == "__main__":
    main()
