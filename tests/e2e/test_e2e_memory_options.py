"""`train.py stage=lm` with every memory option at once on CPU: trainer.precision=bf16-mixed (autocast bf16),
trainer.accumulate_grad_batches=2 and lm.model.activation_checkpointing=true, on synthetic demo-shaped tokens."""
import numpy as np
import torch
from safetensors.torch import load_file

from builders import load_lm_export
from data.token_shards import write_info, write_shard
from tests.e2e.conftest import run

NUM_CODEBOOKS, CARD, STEPS, ACCUMULATE = 4, 512, 2, 2


def test_bf16_accumulation_and_checkpointing_train_the_lm(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        folder = tmp_path / "tokens" / split
        folder.mkdir(parents=True)
        items = [(f"{split}{index}.wav", rng.integers(0, CARD, (NUM_CODEBOOKS, 60)),
                  {"description": f"piece {index} on piano", "instrument": "piano"}) for index in range(3)]
        write_info(folder, {"num_codebooks": NUM_CODEBOOKS, "cardinality": CARD})
        write_shard(folder, 0, items, dtype=np.dtype(np.int16))
    run_dir = tmp_path / "run"
    result = run("train.py", "stage=lm", "experiment=demo", f"data.tokens_root={tmp_path / 'tokens'}",
                 f"hydra.run.dir={run_dir}", "codec_dir=null", f"trainer.max_steps={STEPS}",
                 "lm.training.warmup_steps=1", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
                 "trainer.enable_progress_bar=false", "data.loader.num_workers=0", "data.loader.batch_size=2",
                 "data.tokens.window_frames=24", "trainer.precision=bf16-mixed",
                 f"trainer.accumulate_grad_batches={ACCUMULATE}", "lm.model.activation_checkpointing=true")
    assert "Using bfloat16 Automatic Mixed Precision" in result.stdout + result.stderr

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    loop = checkpoint["loops"]["fit_loop"]
    assert checkpoint["global_step"] == STEPS
    assert loop["epoch_loop.batch_progress"]["total"]["processed"] == STEPS * ACCUMULATE  # micro-batches
    assert all(state["step"] == STEPS for state in checkpoint["optimizer_states"][0]["state"].values())

    weights = load_file(run_dir / "export" / "lm.safetensors")
    assert all(tensor.dtype == torch.float32 and tensor.isfinite().all() for tensor in weights.values())
    lm, _, _, cfg = load_lm_export(run_dir)
    assert cfg.lm.model.activation_checkpointing and lm.transformer.activation_checkpointing
