import copy
import re

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel

from conditioners.tensors import ConditionTensors
from lm.lm import LMConfig, LMModel
from lm.lora import (LoRAConfig, adapter_size, apply_lora, base_fingerprint, load_adapter, merge_adapter,
                     save_adapter, trainable_parameters, use_adapters)

K, CARD, DIM = 4, 16, 32
ALL_GROUPS = ["self_attention", "cross_attention", "mlp", "heads"]


def tiny_lm(seed: int = 0, cross_attention: bool = True) -> LMModel:
    torch.manual_seed(seed)
    config = LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=64,
                      cross_attention=cross_attention)
    return LMModel(config).eval()


def batch(seed: int = 1) -> tuple[torch.Tensor, ConditionTensors, torch.Tensor]:
    """sequence [2, K, 6], a cross condition of lengths 3 and 5, targets [2, K, 6]."""
    generator = torch.Generator().manual_seed(seed)
    sequence = torch.randint(0, CARD, (2, K, 6), generator=generator)
    condition = ConditionTensors(cross=torch.randn(2, 5, DIM, generator=generator),
                                 cross_mask=torch.arange(5)[None, :] < torch.tensor([3, 5])[:, None])
    return sequence, condition, torch.randint(0, CARD, (2, K, 6), generator=generator)


def loss(lm: LMModel, seed: int = 1) -> torch.Tensor:
    sequence, condition, targets = batch(seed)
    return F.cross_entropy(lm(sequence, condition).reshape(-1, CARD), targets.reshape(-1))


def logits(lm: LMModel) -> torch.Tensor:
    sequence, condition, _ = batch(seed=7)
    with torch.no_grad():
        return lm.eval()(sequence, condition)


def train(lm: LMModel, steps: int = 4) -> LMModel:
    """A few AdamW steps on the adapters so every B moves off zero."""
    optimizer = torch.optim.AdamW(trainable_parameters(lm), lr=1e-2)
    lm.train()
    for step in range(steps):
        optimizer.zero_grad()
        loss(lm, seed=step).backward()
        optimizer.step()
    return lm.eval()


def lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def test_only_adapter_parameters_receive_gradients():
    lm = apply_lora(tiny_lm(), LoRAConfig(rank=4, alpha=8.0, dropout=0.0, targets=ALL_GROUPS))
    train(lm, steps=1)  # B != 0, so A receives a gradient too
    lm.zero_grad(set_to_none=True)
    loss(lm).backward()
    named = dict(lm.named_parameters())
    assert {id(parameter) for parameter in trainable_parameters(lm)} == \
        {id(parameter) for name, parameter in named.items() if lora_parameter(name)}
    for name, parameter in named.items():
        if lora_parameter(name):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None and not parameter.requires_grad, name
    # rank 4 on every linear of the tiny LM: A [4, in] + B [out, 4] per linear.
    per_layer = 4 * ((DIM + 3 * DIM) + (DIM + DIM)  # self-attention qkv, out
                     + (DIM + DIM) + (DIM + 2 * DIM) + (DIM + DIM)  # cross-attention query, key_value, out
                     + (DIM + 64) + (64 + DIM))  # mlp
    size = adapter_size(lm)
    assert size.adapter == 2 * per_layer + 4 * (DIM + K * CARD)
    assert size.base == sum(parameter.numel() for parameter in tiny_lm().parameters())
    assert size.fraction == pytest.approx(size.adapter / size.base)


def test_training_leaves_the_base_bit_identical_and_merge_equals_unmerged():
    base = tiny_lm()
    lm = train(apply_lora(copy.deepcopy(base), LoRAConfig(targets=ALL_GROUPS)))
    trained = dict(lm.named_parameters())
    for name, tensor in base.state_dict().items():
        adapted = name if name in trained else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(trained[adapted], tensor), name
    assert all(parameter.abs().sum() > 0 for name, parameter in trained.items() if ".lora_B." in name)
    unmerged = logits(lm)
    assert (unmerged - logits(base)).abs().max() > 1e-3, "the adapters changed the model"
    merged = merge_adapter(lm)
    assert type(merged) is LMModel and not any("lora" in name for name, _ in merged.named_modules())
    assert list(merged.state_dict()) == list(base.state_dict())
    torch.testing.assert_close(logits(merged), unmerged, atol=1e-5, rtol=0)


def test_save_then_load_on_the_same_base_gives_identical_logits(tmp_path):
    lm = train(apply_lora(tiny_lm(), LoRAConfig(targets=["self_attention", "heads"])))
    save_adapter(lm, tmp_path)
    loaded = load_adapter(tiny_lm(), tmp_path)
    assert torch.equal(logits(loaded), logits(lm))
    assert trainable_parameters(loaded) == []


def test_peft_reads_the_adapter_files(tmp_path):
    lm = train(apply_lora(tiny_lm(), LoRAConfig(targets=["cross_attention", "mlp"])))
    save_adapter(lm, tmp_path)
    peft_model = PeftModel.from_pretrained(tiny_lm(), str(tmp_path))
    sequence, condition, _ = batch(seed=7)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(sequence, condition), logits(lm), atol=0, rtol=0)


def test_an_adapter_from_another_base_is_refused_naming_both_hashes(tmp_path):
    save_adapter(apply_lora(tiny_lm(seed=0), LoRAConfig()), tmp_path)
    other = tiny_lm(seed=1)
    with pytest.raises(ValueError) as error:
        load_adapter(other, tmp_path)
    assert base_fingerprint(tiny_lm(seed=0)) in str(error.value) and base_fingerprint(other) in str(error.value)
    assert not any("lora" in name for name, _ in other.named_modules()), "refused before any module was changed"


def test_an_adapter_file_missing_a_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    save_adapter(apply_lora(tiny_lm(), LoRAConfig()), tmp_path)
    weights = load_file(tmp_path / "adapter_model.safetensors")
    dropped = sorted(weights)[0]
    save_file({key: value for key, value in weights.items() if key != dropped}, tmp_path / "adapter_model.safetensors")
    with pytest.raises(ValueError, match="does not fit this LM.*missing.*" + re.escape(
            dropped.removeprefix("base_model.model.").replace(".weight", ".default.weight"))):
        load_adapter(tiny_lm(), tmp_path)


def test_adapters_switch_and_combine_with_weights(tmp_path):
    base = tiny_lm()
    for index, name in enumerate(["a", "b"]):
        torch.manual_seed(index)
        save_adapter(train(apply_lora(tiny_lm(), LoRAConfig(targets=ALL_GROUPS)), steps=3 + index), tmp_path / name)
    lm = load_adapter(load_adapter(tiny_lm(), tmp_path / "a", name="a"), tmp_path / "b", name="b")
    alone = {name: logits(load_adapter(tiny_lm(), tmp_path / name)) for name in ("a", "b")}
    use_adapters(lm, {"a": 1.0})
    assert torch.equal(logits(lm), alone["a"])
    use_adapters(lm, {"b": 1.0})
    assert torch.equal(logits(lm), alone["b"])
    use_adapters(lm, {"a": 0.0})
    torch.testing.assert_close(logits(lm), logits(base), atol=1e-6, rtol=0)
    # A weighted combination adds the weighted updates: merged weights are base + 0.25 dA + 0.75 dB.
    with pytest.raises(ValueError, match="not all loaded"):
        use_adapters(lm, {"a": 1.0, "c": 1.0})
    use_adapters(lm, {"a": 0.25, "b": 0.75})
    combined = logits(lm)
    merged = merge_adapter(lm)
    torch.testing.assert_close(logits(merged), combined, atol=1e-5, rtol=0)
    updates = {name: merge_adapter(load_adapter(tiny_lm(), tmp_path / name)).heads.weight - base.heads.weight
               for name in ("a", "b")}
    torch.testing.assert_close(merged.heads.weight - base.heads.weight,
                               0.25 * updates["a"] + 0.75 * updates["b"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("fields, named", [
    ({"rank": 0}, "lora.rank"), ({"rank": -2}, "lora.rank"), ({"alpha": 0.0}, "lora.alpha"),
    ({"dropout": 1.0}, "lora.dropout"), ({"dropout": -0.1}, "lora.dropout"),
    ({"targets": ["attention"]}, "lora.targets"), ({"targets": []}, "lora.targets"),
])
def test_bad_config_is_refused_naming_the_field(fields, named):
    with pytest.raises(ValueError, match=named):
        LoRAConfig(**fields)


def test_a_target_matching_no_module_is_refused():
    lm = tiny_lm(cross_attention=False)
    with pytest.raises(ValueError, match="lora.targets: 'cross_attention' matches no module"):
        apply_lora(lm, LoRAConfig(targets=["self_attention", "cross_attention"]))


def test_the_default_config_file_builds_a_lora_config():
    from pathlib import Path

    from omegaconf import OmegaConf
    path = Path(__file__).resolve().parents[2] / "configs" / "lora" / "default.yaml"
    config = LoRAConfig(**{key: value for key, value in OmegaConf.to_container(OmegaConf.load(path)).items()
                           if key != "defaults"})  # the schema line (config_schema.py)
    assert (config.rank, config.alpha, config.dropout, config.targets) == (8, 16.0, 0.05,
                                                                            ["self_attention", "cross_attention"])
    lm = apply_lora(tiny_lm(), config)
    assert adapter_size(lm).adapter == 2 * 8 * ((DIM + 3 * DIM) + (DIM + DIM) + (DIM + DIM) + (DIM + 2 * DIM)
                                                + (DIM + DIM))
