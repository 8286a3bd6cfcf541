"""Estimated peak memory of one LM training step, from parameter counts and the tensors autograd keeps.

    python -m bench.memory_estimate                   # docs/train_memory.md's table: small / medium / large
    python -m bench.memory_estimate --seconds 10 --batches 1 4

Notation: P parameters of the LM, P_train the trained ones (all of them, or LoRA's adapters), P_linear those of
linear layers; per micro-batch B examples, S pattern steps, T frames, n = B S tokens; D width, F MLP width, M
condition-memory tokens, K codebooks, card codebook size; a = bytes of a kept activation (4 fp32, 2 bf16-mixed);
r = 4, the residual stream, fp32 in both precisions (an fp32 embedding plus bf16 outputs stays fp32).

- weights 4 P (fp32 master weights in both precisions), gradients 4 P_train, AdamW's moments 8 P_train;
- bf16-mixed: autocast's bf16 copy of every linear weight, 2 P_linear, kept for backward (with checkpointing only
  those outside the blocks: the heads and the memory's key/value projections, which run before the blocks);
- activations, per block and token, the tensors torch's kernels keep for backward (layer norm its input and two
  fp32 statistics, a linear its input, scaled_dot_product_attention's flash / memory-efficient kernels q, k, v and
  the output, GELU its input):
      norms       r D + 8 bytes per norm (2, or 3 with cross-attention)
      self-attn   a D (qkv's input) + 3 a D (q, k, v) + a D (attention output, also the out-projection's input)
      cross-attn  a D (query's input) + a D (q) + a D (attention output)
      MLP         a D (first linear's input) + a F (GELU's input) + a F (second linear's input)
  so (12 D + 2 F) x 4 bytes for an fp32 block with cross-attention; per block and example the memory's keys,
  values and projection input, 3 a M D. Outside the blocks, per token: the final norm's input r D, the heads' input
  a D and the logits a K card (the pattern's gather keeps its source); per frame the loss's fp32 log-probabilities
  4 K card.
  Activation checkpointing keeps only each block's input (r D per token, plus the memory); backward recomputes one
  block at a time, whose activations then exist beside them.
  LoRA (a frozen base): a linear keeps its input only for its weight's gradient, so a frozen linear without an
  adapter keeps nothing (attention and GELU still keep theirs); an adapted linear keeps its input for the adapter,
  or with dropout the dropped-out copy (a) and its mask (1 byte: CUDA's boolean mask; a on CPU, whose dropout
  multiplies by a scaled mask), plus the adapter's A output (a x rank).
- backward adds to the activations the larger of: at its start, the fp32 gradients of the log-probabilities and
  of the logits, 8 K card per frame; with checkpointing, one recomputed block;
- by the end of backward the activations are gone and the gradients exist, and AdamW's step adds its
  temporaries: on CUDA (the foreach implementation) sqrt(v) of every trained parameter at once, 4 P_train; on CPU
  (one tensor at a time) sqrt(v) and its bias-corrected copy of the largest trained tensor.

peak = weights + moments + max(autocast copies + activations + backward's addition, gradients + AdamW's step),
and with gradient accumulation the gradients of the earlier micro-batches join the first term.
In between, activations are freed as gradients appear; where a block's gradients outweigh its activations (small
batches of large models) the second term is the peak. Not counted: the CUDA context, the allocator's
fragmentation, the frozen text encoder. bench/train_memory.py measures the same parts on CPU and
tests/bench/test_train_memory.py compares them (docs/train_memory.md).
"""
import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import nn

import config_schema  # noqa: F401  the config groups' schemas, which the presets' defaults name
from lm.lm import LMConfig, LMModel
from lm.lora import LoRAConfig
from lm.patterns import DelayPattern

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ACTIVATION_BYTES = {"32-true": 4, "bf16-mixed": 2}  # trainer.precision -> bytes of a kept activation
RESIDUAL_BYTES = 4  # the residual stream stays fp32 under autocast
NORM_STATISTICS_BYTES = 8  # layer norm keeps a mean and a reciprocal standard deviation per token (fp32)
# CUDA's dropout keeps a boolean mask, CPU's a mask of the activation's dtype; CUDA's AdamW steps every tensor at
# once (foreach), CPU's one at a time
DEVICES = ("cuda", "cpu")
FRAME_RATE = 50  # frames per second of MusicGen's 32 kHz EnCodec
PRESETS = ("musicgen_small", "musicgen_medium", "musicgen_large")  # configs/lm/
BATCHES = (1, 2, 4, 8, 16)
GiB = 2 ** 30


@dataclass
class MemoryOptions:
    """The memory options of a training run (trainer.precision, lm.model.activation_checkpointing,
    trainer.accumulate_grad_batches, lora)."""

    precision: str = "32-true"  # "32-true" | "bf16-mixed"
    checkpointing: bool = False
    micro_batches: int = 1  # the batch is split into this many micro-batches (gradient accumulation)
    lora: LoRAConfig | None = None

    def __post_init__(self) -> None:
        if self.precision not in ACTIVATION_BYTES:
            raise ValueError(f"precision must be one of {sorted(ACTIVATION_BYTES)}, got {self.precision!r}")
        if self.micro_batches < 1:
            raise ValueError(f"micro_batches must be >= 1, got {self.micro_batches}")


@dataclass
class MemoryEstimate:
    """Bytes of the parts of one training step's peak."""

    weights: int  # fp32 weights, the frozen base and the adapters included
    gradients: int  # fp32, one per trained parameter
    optimizer: int  # AdamW's two fp32 moments per trained parameter
    autocast_weights: int  # bf16-mixed: autocast's bf16 copies of the linear weights, kept for backward
    activations: int  # what one micro-batch's forward keeps for backward (logits and log-probabilities included)
    backward: int  # the most backward adds on top of them: the loss's gradients, or a recomputed block
    optimizer_step: int  # AdamW's temporaries while it steps (the activations are gone by then)
    accumulating: bool  # gradient accumulation: the earlier micro-batches' gradients exist during the later ones

    @property
    def forward(self) -> int:
        """What the forward pass leaves alive: autocast's weight copies and the activations."""
        return self.autocast_weights + self.activations

    @property
    def total(self) -> int:
        backward = self.forward + self.backward + (self.gradients if self.accumulating else 0)
        return self.weights + self.optimizer + max(backward, self.gradients + self.optimizer_step)


def lora_adapter_parameters(model: LMModel, lora: LoRAConfig) -> int:
    """rank x (in + out) for every linear that lora.targets adapts."""
    pattern = lora.target_pattern()
    return sum(lora.rank * (module.in_features + module.out_features) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and re.fullmatch(pattern, name))


def linear_input_bytes(group: str, in_features: int, kept_anyway: bool, activation: int,
                       lora: LoRAConfig | None, device: str) -> int:
    """Bytes per token that a linear of `group` (lm/lora.py TARGET_GROUPS) adds to what backward keeps: its input,
    needed for its weight's gradient or for an adapter's. kept_anyway: another kernel keeps the same input tensor
    (the out-projections' input is the attention output)."""
    if lora is None:
        return 0 if kept_anyway else activation * in_features
    if group not in lora.targets:
        return 0
    adapter_output = activation * lora.rank
    if lora.dropout == 0:
        return (0 if kept_anyway else activation * in_features) + adapter_output
    mask = 1 if device == "cuda" else activation
    return (activation + mask) * in_features + adapter_output


def block_bytes_per_token(config: LMConfig, activation: int, lora: LoRAConfig | None, device: str) -> int:
    """Bytes one transformer block keeps for backward per token (the table of the module docstring)."""
    D, F = config.dim, config.ffn_dim
    norms = 3 if config.cross_attention else 2
    total = norms * (RESIDUAL_BYTES * D + NORM_STATISTICS_BYTES)
    total += (linear_input_bytes("self_attention", D, False, activation, lora, device) + activation * 4 * D
              + linear_input_bytes("self_attention", D, True, activation, lora, device))
    if config.cross_attention:
        total += (linear_input_bytes("cross_attention", D, False, activation, lora, device) + activation * 2 * D
                  + linear_input_bytes("cross_attention", D, True, activation, lora, device))
    total += (linear_input_bytes("mlp", D, False, activation, lora, device) + activation * F
              + linear_input_bytes("mlp", F, False, activation, lora, device))
    return total


def estimate_training_memory(config: LMConfig, batch: int, frames: int, options: MemoryOptions,
                             memory_tokens: int, device: str = "cuda") -> MemoryEstimate:
    """The estimated peak of one training step on `batch` examples of `frames` frames (delay pattern), each with
    `memory_tokens` condition-memory tokens for cross-attention, on `device` ("cuda" or "cpu")."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if batch % options.micro_batches:
        raise ValueError(f"batch={batch} must be divisible by micro_batches={options.micro_batches}")
    with torch.device("meta"):
        model = LMModel(config)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    linears = {name: module.weight.numel() for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    if options.checkpointing:  # the blocks' weight copies are made again when backward recomputes each block
        linears = {name: size for name, size in linears.items()
                   if not name.startswith("transformer.layers.") or name.endswith("key_value")}
    adapters = 0 if options.lora is None else lora_adapter_parameters(model, options.lora)
    trained = parameters if options.lora is None else adapters
    if device == "cuda":
        step_temporaries = 4 * trained
    elif options.lora is None:
        step_temporaries = 2 * 4 * max(parameter.numel() for parameter in model.parameters())
    else:  # an adapter's largest tensor: A or B of the widest adapted linear
        step_temporaries = 2 * 4 * options.lora.rank * max(
            max(module.in_features, module.out_features) for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and re.fullmatch(options.lora.target_pattern(), name))
    activation = ACTIVATION_BYTES[options.precision]
    micro_batch = batch // options.micro_batches
    tokens = micro_batch * DelayPattern(config.num_codebooks).get_pattern(frames).num_steps
    logits_per_token = config.num_codebooks * config.card

    block = block_bytes_per_token(config, activation, options.lora, device) * tokens
    memory = 3 * activation * memory_tokens * config.dim * micro_batch if config.cross_attention else 0
    kept_per_block = RESIDUAL_BYTES * config.dim * tokens if options.checkpointing else block
    outside = tokens * (RESIDUAL_BYTES * config.dim + NORM_STATISTICS_BYTES + activation * logits_per_token
                        + linear_input_bytes("heads", config.dim, False, activation, options.lora, device))
    log_probabilities = 4 * logits_per_token * micro_batch * frames
    return MemoryEstimate(
        weights=4 * (parameters + adapters), gradients=4 * trained, optimizer=8 * trained,
        autocast_weights=2 * (sum(linears.values()) + adapters) if options.precision == "bf16-mixed" else 0,
        activations=config.num_layers * (kept_per_block + memory) + outside + log_probabilities,
        backward=max(2 * log_probabilities, block if options.checkpointing else 0),
        optimizer_step=step_temporaries, accumulating=options.micro_batches > 1)


def preset_config(preset: str) -> LMConfig:
    """configs/lm/<preset>.yaml's model."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return LMConfig(**compose(config_name=None, overrides=[f"+lm={preset}"]).lm.model)


def lora_config(name: str) -> LoRAConfig:
    """configs/lora/<name>.yaml."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return LoRAConfig(**compose(config_name=None, overrides=[f"+lora={name}"]).lora)


def markdown_table(presets: list[str], batches: list[int], seconds: float, memory_tokens: int,
                   lora: LoRAConfig) -> str:
    """One row per preset and batch: estimated peak GiB of full fine-tuning and LoRA, fp32 and bf16-mixed, without
    and with activation checkpointing."""
    columns = [(tuning, precision, checkpointing) for tuning in ("full", "LoRA")
               for precision in ACTIVATION_BYTES for checkpointing in (False, True)]
    header = ["preset", "params", "batch"] + [
        f"{tuning} {'fp32' if precision == '32-true' else 'bf16'}{' ckpt' if checkpointing else ''}"
        for tuning, precision, checkpointing in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    frames = round(seconds * FRAME_RATE)
    for preset in presets:
        config = preset_config(preset)
        with torch.device("meta"):
            parameters = sum(parameter.numel() for parameter in LMModel(config).parameters())
        for batch in batches:
            cells = []
            for tuning, precision, checkpointing in columns:
                options = MemoryOptions(precision=precision, checkpointing=checkpointing,
                                        lora=lora if tuning == "LoRA" else None)
                estimate = estimate_training_memory(config, batch, frames, options, memory_tokens)
                cells.append(f"{estimate.total / GiB:.1f}")
            lines.append("| " + " | ".join([preset, f"{parameters / 1e9:.2f} B", str(batch), *cells]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), help="configs/lm/ presets")
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--seconds", type=float, default=30.0, help=f"window length ({FRAME_RATE} Hz frames)")
    parser.add_argument("--memory-tokens", type=int, default=64, help="text tokens the LM cross-attends to")
    parser.add_argument("--lora", default="default", help="configs/lora/<name>.yaml for the LoRA columns")
    args = parser.parse_args()
    print(markdown_table(args.presets, args.batches, args.seconds, args.memory_tokens, lora_config(args.lora)))


if __name__ == "__main__":
    main()
