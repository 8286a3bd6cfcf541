"""Activation checkpointing (`LMConfig.activation_checkpointing`): the same loss and gradients as without, fewer
tensors kept for backward, never used when decoding or in eval mode, and no weights of its own."""
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

from builders import init_from_export
from conditioners.tensors import ConditionTensors
from lit.lm_module import WEIGHTS_FILE
from lm.lm import LMConfig, LMModel
from lm.lora import LoRAConfig, apply_lora

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")
K, CARD, DIM, LAYERS = 4, 16, 32, 3


def model_pair(positional: str = "sin") -> tuple[LMModel, LMModel]:
    """The same weights without and with activation checkpointing, both in training mode."""
    config = LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=LAYERS, ffn_dim=64,
                      positional=positional)
    plain = LMModel(config).train()
    checkpointed = LMModel(replace(config, activation_checkpointing=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    return plain, checkpointed


def conditions() -> ConditionTensors:
    """Two examples: a padded cross memory (lengths 3 and 5), two prepended steps and an added embedding."""
    lengths = torch.tensor([[3], [5]])
    return ConditionTensors(cross=torch.randn(2, 5, DIM), cross_mask=torch.arange(5)[None, :] < lengths,
                            prepend=torch.randn(2, 2, DIM), add=torch.randn(2, 1, DIM))


def loss_and_gradients(model: nn.Module, sequence: torch.Tensor, condition: ConditionTensors, targets: torch.Tensor
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = F.cross_entropy(model(sequence, condition).reshape(-1, CARD), targets.reshape(-1))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def saved_bytes(model: nn.Module, sequence: torch.Tensor, condition: ConditionTensors) -> int:
    """Bytes of the tensors autograd keeps for the backward of one forward (the activation memory)."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(sequence, condition)
    return total


@pytest.mark.parametrize("positional", ["sin", "rope"])
def test_checkpointing_gives_the_same_loss_and_gradients(positional):
    plain, checkpointed = model_pair(positional)
    sequence, targets = torch.randint(0, CARD + 1, (2, K, 12)), torch.randint(0, CARD, (2, K, 12))
    condition = conditions()
    expected_loss, expected = loss_and_gradients(plain, sequence, condition, targets)
    loss, gradients = loss_and_gradients(checkpointed, sequence, condition, targets)
    assert loss == expected_loss
    assert gradients.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(gradients[name], expected[name], atol=1e-6, rtol=0, msg=name)
    # It did checkpoint: the blocks' internals were recomputed, not kept.
    assert saved_bytes(checkpointed, sequence, condition) < 0.5 * saved_bytes(plain, sequence, condition)


def test_checkpointing_with_lora_dropout_gives_the_same_gradients():
    """The recomputed forward draws the same dropout masks (the RNG state is replayed)."""
    plain, checkpointed = model_pair()
    lora = LoRAConfig(rank=4, alpha=8.0, dropout=0.3, targets=["self_attention", "mlp"])
    plain, checkpointed = apply_lora(plain, lora), apply_lora(checkpointed, lora)
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):  # lora_B starts at zero: give the adapters a gradient path through A
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.data.fill_(0.1)
    sequence, targets, condition = torch.randint(0, CARD, (2, K, 10)), torch.randint(0, CARD, (2, K, 10)), conditions()
    torch.manual_seed(1)
    expected_loss, expected = loss_and_gradients(plain, sequence, condition, targets)
    torch.manual_seed(1)
    loss, gradients = loss_and_gradients(checkpointed, sequence, condition, targets)
    assert expected and loss == expected_loss
    for name in expected:
        torch.testing.assert_close(gradients[name], expected[name], atol=1e-6, rtol=0, msg=name)


def test_cached_decoding_with_the_key_on_in_training_mode_equals_the_forward():
    """Decoding writes the caches: a checkpointed block would not (nor recompute them), so decode must not
    checkpoint even with gradients enabled in training mode."""
    plain, checkpointed = model_pair()
    sequence, condition = torch.randint(0, CARD, (2, K, 8)), conditions()
    with torch.no_grad():
        full = plain(sequence, condition)
    state = checkpointed.start_decoding(2, capacity=8, conditions=condition)
    chunks = [checkpointed.decode(sequence[:, :, :3], state)]
    chunks += [checkpointed.decode(sequence[:, :, step:step + 1], state) for step in range(3, 8)]
    torch.testing.assert_close(torch.cat(chunks, dim=2).detach(), full, atol=1e-5, rtol=0)


def test_eval_mode_does_not_checkpoint():
    plain, checkpointed = model_pair()
    sequence, condition = torch.randint(0, CARD, (2, K, 8)), conditions()
    assert saved_bytes(checkpointed.eval(), sequence, condition) == saved_bytes(plain.eval(), sequence, condition)


def test_a_checkpointed_run_initializes_a_run_without_it(tmp_path):
    """init_from does not count activation_checkpointing as a model difference; the weights are the same keys."""
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["stage=lm", "lm=tiny", "codec_dir=null"])
    source = cfg.copy()
    source.lm.model.activation_checkpointing = True
    trained = nn.ModuleDict({"model": LMModel(LMConfig(**OmegaConf.to_container(source.lm.model, resolve=True)))})
    OmegaConf.save(source, tmp_path / "train_config.yaml")
    save_file(trained.state_dict(), tmp_path / WEIGHTS_FILE)

    cfg.init_from = str(tmp_path)
    fresh = nn.ModuleDict({"model": LMModel(LMConfig(**OmegaConf.to_container(cfg.lm.model, resolve=True)))})
    assert not fresh["model"].transformer.activation_checkpointing
    init_from_export(fresh, cfg)
    sequence = torch.randint(0, cfg.lm.model.card, (1, cfg.lm.model.num_codebooks, 6))
    with torch.no_grad():
        torch.testing.assert_close(fresh["model"].eval()(sequence), trained["model"].eval()(sequence), atol=0, rtol=0)
