"""Fixtures of the server tests: a random tiny LM export with its codec, and a real uvicorn server on a free port."""
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import uvicorn
from fastapi import FastAPI
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from builders import build_codec, build_conditioner, build_lm, build_lm_training, build_pattern
from lit.lm_module import BatchConditioner, LMLightningModule

ROOT = Path(__file__).resolve().parents[2]


def save_tiny_export(root: Path, *overrides: str) -> Path:
    """A random tiny LM (2 layers, card 256, MiniLM text conditioner unless `overrides` change it) and a random tiny
    causal codec (24 kHz mono, 75 Hz) saved under `root`; the same recipe as tests/pipeline's. Returns the export."""
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


@pytest.fixture(scope="session")
def serve_export(tmp_path_factory) -> Path:
    return save_tiny_export(tmp_path_factory.mktemp("serve_export"))


@contextmanager
def running_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free port of 127.0.0.1; yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started serving")
            thread.join(0.05)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)
        listener.close()
