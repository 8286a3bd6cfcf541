"""Peak memory and step time of LM training steps on CPU for each memory option, against the fp32 baseline.

    python -m bench.train_memory                                  # tiny LM, batch 4, 10 s windows (~4 min)
    python -m bench.train_memory --batch 8 --seconds 30 --steps 1   # any configs/lm/ preset with --preset

Options (the memory of each measured in a fresh process): baseline (fp32), checkpointing
(lm.model.activation_checkpointing), bf16 (bf16-mixed: the forward under torch.autocast("cpu", bfloat16), as
Lightning runs it), accumulation (the batch as 4 micro-batches of B / 4, each loss divided by 4, one optimizer step,
as trainer.accumulate_grad_batches=4) and combined (all three). A step is what Lightning runs, without the
Trainer: LMLightningModule.losses on random codes of `--seconds` (the delay pattern's sequence) with a random
condition memory that takes gradients (as the trained text projection's output does), backward, AdamW.step
(configure_optimizers) and zero_grad, after one warm-up step that creates AdamW's moments.

Memory, two ways:
- peak_mb: tensor accounting, the CPU analogue of torch.cuda.max_memory_allocated. A TorchDispatchMode sees every
  tensor an operator returns (autograd's backward and the checkpoint's recomputation included); each new storage's
  bytes count from its creation until a weak reference to it reports it freed. The peak of that count during a
  step, plus the weights and AdamW's moments alive before it. Views and in-place results share their input's
  storage and count once. Deterministic, and the parts bench/memory_estimate.py estimates.
- rss_mb: what the operating system saw, the process's peak resident size (ru_maxrss) over everything from model
  construction to the end of the steps, minus the resident size after the imports. It includes the allocator's
  cached and fragmented memory, so it is larger and less precise for small models.
Step time: in this process, the median of `--steps` untracked steps of each option, the options interleaved.
The last line is JSON; ratios are each option over baseline.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.memory_estimate import FRAME_RATE, MemoryOptions, estimate_training_memory, preset_config
from builders import add_lora
from conditioners.tensors import ConditionTensors
from lit.lm_module import LMLightningModule, LMTrainingConfig
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern

ACCUMULATION = 4  # micro-batches of the accumulation options
OPTIONS = {
    "baseline": MemoryOptions(),
    "checkpointing": MemoryOptions(checkpointing=True),
    "bf16": MemoryOptions(precision="bf16-mixed"),
    "accumulation": MemoryOptions(micro_batches=ACCUMULATION),
    "combined": MemoryOptions(precision="bf16-mixed", checkpointing=True, micro_batches=ACCUMULATION),
}
MiB = 2 ** 20


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of the tensor storages operators create while the mode is active, until each is freed."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.storages: dict[int, weakref.ref] = {}  # id -> a weak reference whose callback subtracts its bytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        # A view or an in-place result shares an input's storage: not new memory (nor is a weight's transpose).
        inputs = {id(tensor.untyped_storage()) for tensor in tree_leaves((args, kwargs))
                  if isinstance(tensor, torch.Tensor)}
        for tensor in tree_leaves(output):
            if isinstance(tensor, torch.Tensor) and id(tensor.untyped_storage()) not in inputs:
                self.track(tensor.untyped_storage())
        return output

    def track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key in self.storages:
            return
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        self.storages[key] = weakref.ref(storage, lambda _, key=key, size=size: self.free(key, size))

    def free(self, key: int, size: int) -> None:
        self.live -= size
        del self.storages[key]

    def reset_peak(self) -> None:
        self.peak = self.live


@dataclass
class MemoryMeasurement:
    """One option's training step on CPU, by tensor accounting; bytes."""

    static: int  # alive before the step: weights and AdamW's moments
    peak: int  # static + the most the step had alive on top of it
    forward: int  # what the first micro-batch's forward left alive for backward (activations, autocast copies)


def trainer_module(config: LMConfig, options: MemoryOptions) -> LMLightningModule:
    """The LM's training module, with LoRA adapters added as train.py adds them (builders.add_lora)."""
    model = LMModel(LMConfig(**{**asdict(config), "activation_checkpointing": options.checkpointing}))
    module = LMLightningModule(model, DelayPattern(config.num_codebooks), LMTrainingConfig(warmup_steps=0))
    if options.lora is not None:
        add_lora(module, options.lora)
    return module.train()


def training_step(module: LMLightningModule, optimizer: torch.optim.Optimizer, codes: torch.Tensor,
                  memory: ConditionTensors, options: MemoryOptions,
                  after_forward: Callable[[], None] | None = None) -> None:
    """One optimizer step over `codes` [B, K, T] in options.micro_batches micro-batches."""
    for index, (micro_codes, micro_memory, micro_mask) in enumerate(zip(
            codes.chunk(options.micro_batches), memory.cross.chunk(options.micro_batches),
            memory.cross_mask.chunk(options.micro_batches))):
        conditions = ConditionTensors(cross=micro_memory, cross_mask=micro_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=options.precision == "bf16-mixed"):
            loss = module.losses(micro_codes, conditions)[0].mean() / options.micro_batches
        if index == 0 and after_forward is not None:
            after_forward()
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def warmed_up(config: LMConfig, options: MemoryOptions, batch: int, frames: int, memory_tokens: int
              ) -> tuple[LMLightningModule, torch.optim.Optimizer, torch.Tensor, ConditionTensors]:
    """The module, its AdamW after one step (which creates the moments), random codes [B, K, T] and a random
    condition memory [B, M, D]."""
    torch.manual_seed(0)
    module = trainer_module(config, options)
    optimizer = module.configure_optimizers()["optimizer"]
    codes = torch.randint(0, config.card, (batch, config.num_codebooks, frames))
    memory = ConditionTensors(cross=torch.randn(batch, memory_tokens, config.dim, requires_grad=True),
                              cross_mask=torch.ones(batch, memory_tokens, dtype=torch.bool))
    training_step(module, optimizer, codes, memory, options)
    return module, optimizer, codes, memory


def measure_memory(config: LMConfig, options: MemoryOptions, batch: int, frames: int,
                   memory_tokens: int) -> MemoryMeasurement:
    """One step after the warm-up, under LiveTensorBytes."""
    module, optimizer, codes, memory = warmed_up(config, options, batch, frames, memory_tokens)
    static = sum(parameter.untyped_storage().nbytes() for parameter in module.parameters())
    static += sum(tensor.untyped_storage().nbytes() for state in optimizer.state.values()
                  for tensor in state.values() if isinstance(tensor, torch.Tensor) and tensor.dim() > 0)
    forward = 0
    with LiveTensorBytes() as tracker:
        def after_forward() -> None:
            nonlocal forward
            forward = tracker.live
        training_step(module, optimizer, codes, memory, options, after_forward)
    return MemoryMeasurement(static=static, peak=static + tracker.peak, forward=forward)


def median_step_seconds(config: LMConfig, batch: int, frames: int, memory_tokens: int, steps: int
                        ) -> dict[str, float]:
    """Each option's median step duration over `steps` rounds after a warm-up; a round steps every option once, so
    a slow phase of the machine hits every option alike."""
    runs = {option: warmed_up(config, options, batch, frames, memory_tokens) for option, options in OPTIONS.items()}
    durations = {option: [] for option in OPTIONS}
    for _ in range(steps):
        for option, (module, optimizer, codes, memory) in runs.items():
            start = time.perf_counter()
            training_step(module, optimizer, codes, memory, OPTIONS[option])
            durations[option].append(time.perf_counter() - start)
    return {option: sorted(times)[len(times) // 2] for option, times in durations.items()}


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def run_option(args: argparse.Namespace, option: str) -> dict:
    """`option`'s memory measured in a fresh process (so its peak resident size is its own)."""
    command = [sys.executable, "-m", "bench.train_memory", "--option", option, "--preset", args.preset,
               "--batch", str(args.batch), "--seconds", str(args.seconds), "--memory-tokens", str(args.memory_tokens),
               "--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise RuntimeError(f"option {option} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_option(args: argparse.Namespace) -> None:
    """The worker: one option's memory, printed as JSON."""
    before = resident_kib()
    config = preset_config(args.preset)
    frames = round(args.seconds * FRAME_RATE)
    options = OPTIONS[args.option]
    measurement = measure_memory(config, options, args.batch, frames, args.memory_tokens)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    estimate = estimate_training_memory(config, args.batch, frames, options, args.memory_tokens, device="cpu")
    print(json.dumps({"peak_mb": measurement.peak / MiB, "rss_mb": rss / 1024, "estimate_mb": estimate.total / MiB}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="configs/lm/<preset>.yaml")
    parser.add_argument("--batch", type=int, default=4,
                        help=f"examples per optimizer step (divisible by {ACCUMULATION})")
    parser.add_argument("--seconds", type=float, default=10.0, help=f"window length ({FRAME_RATE} Hz frames)")
    parser.add_argument("--memory-tokens", type=int, default=16, help="condition-memory tokens for cross-attention")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per option (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--option", choices=list(OPTIONS), help=argparse.SUPPRESS)  # the worker of one option
    args = parser.parse_args()
    if args.batch % ACCUMULATION:
        raise SystemExit(f"--batch must be divisible by {ACCUMULATION}, got {args.batch}")
    torch.set_num_threads(args.threads)
    if args.option is not None:
        measure_option(args)
        return
    results = {option: run_option(args, option) for option in OPTIONS}
    frames = round(args.seconds * FRAME_RATE)
    seconds = median_step_seconds(preset_config(args.preset), args.batch, frames, args.memory_tokens, args.steps)
    for option, result in results.items():
        result["step_s"] = seconds[option]
    baseline = results["baseline"]
    summary = {"preset": args.preset, "batch": args.batch, "seconds": args.seconds, "threads": args.threads,
               "baseline_peak_mb": round(baseline["peak_mb"], 1), "baseline_rss_mb": round(baseline["rss_mb"], 1),
               "baseline_step_s": round(baseline["step_s"], 3)}
    for option, result in results.items():
        print(f"{option:>14}: peak {result['peak_mb']:8.1f} MB (estimate {result['estimate_mb']:8.1f}), "
              f"rss {result['rss_mb']:8.1f} MB, step {result['step_s']:.3f} s")
        if option != "baseline":
            summary |= {f"{option}_peak_ratio": round(result["peak_mb"] / baseline["peak_mb"], 3),
                        f"{option}_rss_ratio": round(result["rss_mb"] / baseline["rss_mb"], 3),
                        f"{option}_time_ratio": round(result["step_s"] / baseline["step_s"], 3)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
