"""bench.memory_estimate against bench.train_memory's tensor accounting of real training steps on CPU, for every
memory option, on the tiny LM (its logits dominate) and on an LM whose blocks dominate; and the accounting itself
on allocations whose sizes are known."""
import pytest
import torch

from bench.memory_estimate import MemoryOptions, estimate_training_memory, lora_config, preset_config
from bench.train_memory import OPTIONS, LiveTensorBytes, measure_memory
from lm.lm import LMConfig

BATCH, FRAMES, MEMORY_TOKENS = 4, 100, 8
MiB = 2 ** 20
# Four blocks of width 64 against 4 x 32 logits per token: the per-block formula carries the estimate.
BLOCK_DOMINATED = LMConfig(num_codebooks=4, card=32, dim=64, num_heads=4, num_layers=4, ffn_dim=256)
CASES = {**OPTIONS, "lora": MemoryOptions(lora=lora_config("default")),
         "lora_bf16_checkpointing": MemoryOptions(precision="bf16-mixed", checkpointing=True,
                                                  lora=lora_config("default"))}


def test_live_tensor_bytes_counts_new_storages_once_until_freed():
    with LiveTensorBytes() as tracker:
        first = torch.ones(1000)  # 4,000 bytes
        second = torch.ones(2000)  # 8,000 bytes
        views = (second[10:], second.view(40, 50), second.add_(1))  # the same storage: nothing new
        assert tracker.live == 12_000
        del second, views
        assert tracker.live == 4_000
        third = first * 2
    assert tracker.peak == 12_000 and tracker.live == 8_000 and third.shape == first.shape


# bf16 matmuls are slow on CPU; the tiny LM's 4 x 1024-wide heads make its bf16 cases take seconds each.
MEASURED = ([("tiny", case) for case, options in CASES.items() if options.precision == "32-true"]
            + [("block_dominated", case) for case in CASES])


@pytest.mark.parametrize(("model", "case"), MEASURED)
def test_estimate_matches_the_measured_training_step(model, case):
    """What the forward leaves for backward within 5% of the estimate, the step's peak within 10% (measured: forward
    within 3.5% in every case; peak within 1% but for checkpointing, whose recomputed block's backward temporaries
    the estimate leaves out: -4% to -8% on the block-dominated LM; docs/train_memory.md)."""
    config = preset_config("tiny") if model == "tiny" else BLOCK_DOMINATED
    options = CASES[case]
    measured = measure_memory(config, options, BATCH, FRAMES, MEMORY_TOKENS)
    estimate = estimate_training_memory(config, BATCH, FRAMES, options, MEMORY_TOKENS, device="cpu")
    assert estimate.weights + estimate.optimizer == measured.static  # weights and AdamW's moments, exactly
    assert estimate.forward == pytest.approx(measured.forward, rel=0.05)
    assert estimate.total == pytest.approx(measured.peak, rel=0.10)
