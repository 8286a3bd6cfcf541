"""LoRA adapters on the LM through PEFT: add them, train only them, save and load them in PEFT's layout, switch or
weigh several, and merge them into a plain LM.

The LM is a plain `nn.Module`, not a transformers `PreTrainedModel`, so the entry point is PEFT's functional API
(`peft.functional`): `inject_adapter_in_model` swaps the targeted `nn.Linear`s for LoRA layers in place and returns
the same `LMModel`, whose own methods (`forward`, `start_decoding`, `decode`) keep working for training and the
generator. `get_peft_model` would wrap it in a `PeftModel`: another class, with `base_model.model.` before every
state-dict key and machinery (task types, generation, model cards) made for transformers models. Merging replaces
each LoRA layer by its base `nn.Linear` with the update added, so the result has exactly a base LM's modules and
state-dict keys.

Targets are named by the LM's structure, as groups (module names relative to the LM, N = layer index):

    self_attention   transformer.layers.N.self_attention.qkv, .out           (lm/attention.py SelfAttention)
    cross_attention  transformer.layers.N.cross_attention.query, .key_value, .out   (CrossAttention)
    mlp              transformer.layers.N.mlp.0, .mlp.2   (the two linears of TransformerBlock.mlp)
    heads            heads                                 (the K output heads as one linear, lm/lm.py)

An adapter directory holds PEFT's two files, `adapter_config.json` (a `peft.LoraConfig`) and
`adapter_model.safetensors` (keys as `PeftModel.save_pretrained` writes them:
`base_model.model.<module>.lora_A.weight`), plus `base_fingerprint.json`, the SHA-256 of the base LM's state dict,
kept beside PEFT's files rather than inside its config so PEFT reads the config without unknown keys.
"""
import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig
from peft.functional import get_peft_model_state_dict, inject_adapter_in_model, set_adapter, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.utils import load_peft_weights
from safetensors.torch import save_file

from lm.lm import LMModel

TARGET_GROUPS = {  # group -> regular expression over module names, matched whole
    "self_attention": r"transformer\.layers\.\d+\.self_attention\.(qkv|out)",
    "cross_attention": r"transformer\.layers\.\d+\.cross_attention\.(query|key_value|out)",
    "mlp": r"transformer\.layers\.\d+\.mlp\.(0|2)",
    "heads": r"heads",
}
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"  # PEFT's names
FINGERPRINT_FILE = "base_fingerprint.json"
PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before module names


@dataclass
class LoRAConfig:
    """An adapter's shape; configs/lora/default.yaml comments each field."""

    rank: int = 8  # r: the update of a [out, in] weight is B [out, r] @ A [r, in]
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.05  # dropout on the adapter's input during training
    targets: list[str] = field(default_factory=lambda: ["self_attention", "cross_attention"])  # TARGET_GROUPS keys

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"lora.rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha must be positive, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        unknown = [target for target in self.targets if target not in TARGET_GROUPS]
        if not self.targets or unknown:
            raise ValueError(f"lora.targets must be a non-empty list of {sorted(TARGET_GROUPS)}, got {self.targets!r}")

    def target_pattern(self) -> str:
        return "|".join(f"({TARGET_GROUPS[target]})" for target in self.targets)


@dataclass
class AdapterSize:
    adapter: int  # trainable adapter parameters
    base: int  # parameters of the LM without adapters
    fraction: float  # adapter / base


def apply_lora(lm: LMModel, config: LoRAConfig, name: str = "default") -> LMModel:
    """Add a LoRA adapter called `name` to `lm` in place and return it: every base weight frozen, the adapter
    trainable. B starts at zero, so the LM's outputs are unchanged until it trains."""
    module_names = [module_name for module_name, _ in lm.named_modules()]
    for target in config.targets:
        if not any(re.fullmatch(TARGET_GROUPS[target], module_name) for module_name in module_names):
            raise ValueError(f"lora.targets: {target!r} matches no module of this LM (pattern "
                             f"{TARGET_GROUPS[target]!r}; e.g. cross_attention needs lm.model.cross_attention=true)")
    peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                             target_modules=config.target_pattern(), bias="none")
    return inject_adapter_in_model(peft_config, lm, adapter_name=name).train(lm.training)  # new modules: lm's mode


def trainable_parameters(lm: LMModel) -> list[torch.nn.Parameter]:
    """The parameters an optimizer should see: the adapters' (everything else is frozen by `apply_lora`)."""
    return [parameter for parameter in lm.parameters() if parameter.requires_grad]


def base_state_dict(lm: LMModel) -> dict[str, torch.Tensor]:
    """The base LM's weights under a base LM's keys, whether or not adapters are attached (unmerged)."""
    return {name.replace(".base_layer.", "."): tensor for name, tensor in lm.state_dict().items()
            if not any(part.startswith("lora_") for part in name.split("."))}


def adapter_size(lm: LMModel) -> AdapterSize:
    adapter = sum(parameter.numel() for parameter in trainable_parameters(lm))
    base = sum(tensor.numel() for tensor in base_state_dict(lm).values())
    return AdapterSize(adapter=adapter, base=base, fraction=adapter / base)


def base_fingerprint(lm: LMModel) -> str:
    """SHA-256 over the base weights' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(base_state_dict(lm).items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_adapter(lm: LMModel, directory: str | Path, name: str = "default") -> None:
    """Write adapter `name` in PEFT's layout (readable by `peft.PeftModel.from_pretrained`) and the base's
    fingerprint to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lm.peft_config[name].save_pretrained(str(directory))
    weights = get_peft_model_state_dict(lm, adapter_name=name)
    save_file({PEFT_PREFIX + key: tensor.detach().contiguous() for key, tensor in weights.items()},
              directory / WEIGHTS_FILE)
    (directory / FINGERPRINT_FILE).write_text(json.dumps({"sha256": base_fingerprint(lm)}, indent=2) + "\n")


def load_adapter(base_lm: LMModel, directory: str | Path, name: str = "default") -> LMModel:
    """Put the adapter saved in `directory` on `base_lm` (in place) under `name` and make it the active one, in
    `base_lm`'s train/eval mode. Refuses an adapter whose base fingerprint is not `base_lm`'s."""
    directory = Path(directory)
    missing = [file for file in (CONFIG_FILE, WEIGHTS_FILE, FINGERPRINT_FILE) if not (directory / file).is_file()]
    if missing:
        raise FileNotFoundError(f"adapter directory {directory} lacks {missing} (written by lm.lora.save_adapter)")
    expected, actual = json.loads((directory / FINGERPRINT_FILE).read_text())["sha256"], base_fingerprint(base_lm)
    if expected != actual:
        raise ValueError(f"adapter {directory} was trained on base {expected}, but this LM is base {actual}")
    with warnings.catch_warnings():  # PEFT warns that a second adapter makes several adapters: that is the intent
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        inject_adapter_in_model(LoraConfig.from_pretrained(str(directory)), base_lm, adapter_name=name)
    weights = {key.removeprefix(PEFT_PREFIX): tensor for key, tensor in load_peft_weights(str(directory)).items()}
    result = set_peft_model_state_dict(base_lm, weights, adapter_name=name)
    unloaded = [key for key in result.missing_keys if f".{name}." in key and "lora_" in key]
    if result.unexpected_keys or unloaded:
        raise ValueError(f"adapter {directory} does not fit this LM: unexpected {result.unexpected_keys[:5]}, "
                         f"missing {unloaded[:5]}")
    use_adapters(base_lm, {name: 1.0})
    return base_lm.train(base_lm.training)  # the new LoRA modules (their dropout) take the LM's mode: eval stays eval


def use_adapters(lm: LMModel, weights: dict[str, float]) -> None:
    """Make the named adapters the active ones, each update scaled by its weight (1.0 = as trained); the others
    are off. Several active adapters add their weighted updates."""
    loaded = set(getattr(lm, "peft_config", {}))
    if not weights or set(weights) - loaded:
        raise ValueError(f"adapters {sorted(weights)} are not all loaded; loaded: {sorted(loaded)}")
    set_adapter(lm, list(weights), inference_mode=True)  # frozen: loaded adapters are for generation
    for module in lm.modules():
        if isinstance(module, LoraLayer):
            for name, weight in weights.items():
                module.set_scale(name, weight)


def merge_adapters(lm: LMModel, directories: Sequence[str | Path], weights: Sequence[float] | None = None
                   ) -> LMModel:
    """`lm` plus the adapters saved in `directories` (each refused unless trained on `lm`), each update scaled by
    its weight (None: 1.0 each), merged in place into a plain LMModel: what generate.py's `adapters=` and merge.py
    use, so the decode backends and exports see an ordinary LM."""
    weights = [1.0] * len(directories) if weights is None else list(weights)
    if len(weights) != len(directories):
        raise ValueError(f"adapter_weights must give one weight per adapter ({len(directories)}), got {len(weights)}")
    names = [f"adapter{index}" for index in range(len(directories))]
    for name, directory in zip(names, directories):
        load_adapter(lm, directory, name=name)
    use_adapters(lm, dict(zip(names, weights)))
    return merge_adapter(lm)


def merge_adapter(lm: LMModel) -> LMModel:
    """Add the active adapters' (weighted) updates into the base weights and remove every LoRA module, in place
    (inactive adapters are dropped): the result is a plain LMModel with a base LM's state-dict keys, all trainable
    as a freshly built LM's."""
    for module_name, module in list(lm.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child_name = module_name.rpartition(".")
            setattr(lm.get_submodule(parent_name) if parent_name else lm, child_name, module.get_base_layer())
    del lm.peft_config
    for parameter in lm.parameters():
        parameter.requires_grad_(True)
    return lm
