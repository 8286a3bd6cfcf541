"""Multi-process training: 2 CPU ranks under Lightning's `ddp` strategy (gloo) end with the weights of one process
trained on the same global batch, so gradients are averaged across ranks and the data is split without overlap.

Why they must agree: StreamDataModule gives rank r of 2 the stream positions p with p % 2 == r, so 2 ranks x B
items cover the positions one process with batch 2B reads; each rank's loss is a mean over equally many valid
positions and DDP averages the gradients, which is the gradient of the global mean.

This file is also the training script the test runs (`strategy=ddp` relaunches the script once per rank):
    python tests/lit/test_lit_ddp.py --devices 2 --batch-size 2 --out weights.pt
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from lit.datamodule import StreamDataModule
from lit.lm_module import LMLightningModule, LMTrainingConfig
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern

REPO = Path(__file__).resolve().parents[2]
STEPS, RANK_BATCH, NUM_CODEBOOKS, CARD, FRAMES = 3, 2, 2, 16, 12


class SyntheticCodes(Dataset):
    """Item p: random codes [K, T] drawn from a generator seeded by p alone, like the real token datasets."""

    def __getitem__(self, position: int) -> dict:
        generator = torch.Generator().manual_seed(position)
        return {"codes": torch.randint(0, CARD, (NUM_CODEBOOKS, FRAMES), generator=generator)}


def tiny_lm() -> LMModel:
    return LMModel(LMConfig(num_codebooks=NUM_CODEBOOKS, card=CARD, dim=32, num_heads=2, num_layers=2, ffn_dim=64,
                            cross_attention=False))


def train(devices: int, batch_size: int) -> LMLightningModule:
    """STEPS optimizer steps of a tiny unconditional LM; batch_size is per rank."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = LMLightningModule(tiny_lm(), DelayPattern(NUM_CODEBOOKS),
                               LMTrainingConfig(lr=1e-2, warmup_steps=0, total_steps=100, weight_decay=0.1))
    data = StreamDataModule(SyntheticCodes(), SyntheticCodes(), batch_size=batch_size, num_workers=0)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         max_steps=STEPS, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False)  # as train.py: StreamDataModule shards the stream itself
    trainer.fit(module, datamodule=data)
    return module


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def max_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    assert first.keys() == second.keys()
    return max((first[name] - second[name]).abs().max().item() for name in first)


def test_two_ddp_ranks_match_one_process_on_the_global_batch(tmp_path):
    out = tmp_path / "ddp_weights.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, __file__, "--devices", "2", "--batch-size", str(RANK_BATCH),
                             "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    distributed = torch.load(out)

    torch.manual_seed(0)
    initial = weights(tiny_lm())
    global_batch = weights(train(devices=1, batch_size=2 * RANK_BATCH).model)
    rank_batch = weights(train(devices=1, batch_size=RANK_BATCH).model)  # what an unsynchronised rank 0 would reach

    assert max_difference(distributed, global_batch) < 1e-5
    # the tolerance is far below what training and the data change: the comparison could fail
    assert max_difference(global_batch, initial) > 1e-2
    assert max_difference(global_batch, rank_batch) > 1e-2


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    trained = train(devices=args.devices, batch_size=args.batch_size)
    if trained.global_rank == 0:
        torch.save(weights(trained.model), args.out)
