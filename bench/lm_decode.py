"""LM decode speed: codeclm's LMGenerator vs HF transformers' MusicgenForCausalLM.generate, same process and threads.

Both: random weights, hidden 512, 8 layers, 8 heads, FFN 2048, 4 codebooks x 2048, delay pattern, batch 2, top-k 250
sampling, a 32-step cross-attention memory, with and without CFG (coef 3). Rows, each against HF fp32: ours fp32
(`ratio`, the same precision); ours with weights=int8 (lm/backends/quantize.py, `int8_ratio`); ours with
compile=True (lm/backends/compiled.py), fp32 (`compiled_ratio`), with weights=fp16 (`compiled_fp16_ratio`) and
with fp16 weights and an int8 KV cache (`compiled_fp16_int8kv_ratio`, lm/backends/int8_cache.py). Also HF with
torch's quantize_dynamic (the same fbgemm int8 kernels, per-channel weights), so `int8_vs_hf_int8` shows what is
method and what is precision; and ours vs recomputing the whole prefix every step (no KV cache). Growth is a row's
mean step time over the last tenth of the steps over its mean over steps 10-20%. Every generation runs `--repeats`
times and each step's time is the median over the runs, for ours and HF alike, so a pause of the machine in one
run does not count. Prints one JSON line last; docs/decode_speed.md has the results and the targets.

    .venv/bin/python -m bench.lm_decode
    .venv/bin/python -m bench.lm_decode --steps 100 --repeats 1   # a smoke run: growth over a shorter cache
"""
import argparse
import json
import time
import warnings

import torch
from transformers import LogitsProcessor, MusicgenDecoderConfig, MusicgenForCausalLM
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from conditioners.tensors import ConditionTensors
from lm.backends.config import DecodeBackendConfig, with_backend
from lm.generator import GenerationConfig, LMGenerator
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern
from lm.sampling import sample

BATCH, DIM, LAYERS, HEADS, FFN, CODEBOOKS, CARD, MEMORY, TOP_K, CFG_COEF = 2, 512, 8, 8, 2048, 4, 2048, 32, 250, 3.0
# compile=True rows: their DecodeBackendConfig options
COMPILED_ROWS = {"ours_compiled": {}, "ours_compiled_fp16": {"weights": "fp16"},
                 "ours_compiled_fp16_int8kv": {"weights": "fp16", "int8_kv_cache": True}}


class StepTimer(LogitsProcessor):
    """Records the wall time at which HF asks for each step's logits processing."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


def step_durations(times: list[float], start: float) -> torch.Tensor:
    """The time each step finished -> each step's duration [steps]."""
    return torch.diff(torch.tensor([start] + times, dtype=torch.float64))


def step_stats(runs: list[torch.Tensor]) -> tuple[float, float]:
    """Step durations [steps] of repeated runs -> (steps per second, mean step time late / mean step time early),
    from the median duration of each step over the runs."""
    durations = torch.stack(runs).median(dim=0).values
    steps = len(durations)
    early = durations[steps // 10:steps // 5].mean()  # steps 50-100 of 500
    late = durations[9 * steps // 10:].mean()  # steps 450-500 of 500
    return steps / float(durations.sum()), float(late / early)


def our_generator(model: LMModel, cfg_coef: float, **backend_options) -> LMGenerator:
    """backend_options: DecodeBackendConfig's weights, compile, int8_kv_cache."""
    config = GenerationConfig(temperature=1.0, top_k=TOP_K, top_p=0.0, cfg_coef=cfg_coef)
    return LMGenerator(with_backend(model, DecodeBackendConfig(**backend_options)), DelayPattern(CODEBOOKS), config)


def run_ours(generator: LMGenerator, memory: torch.Tensor, steps: int) -> torch.Tensor:
    """Step durations [steps] of one generation."""
    conditions = ConditionTensors(cross=memory, cross_mask=torch.ones(memory.shape[:2], dtype=torch.bool))
    times: list[float] = []
    start = time.perf_counter()
    generator.generate(steps - (CODEBOOKS - 1), conditions=conditions, generator=torch.Generator().manual_seed(0),
                       progress=lambda step, total: times.append(time.perf_counter()))
    assert len(times) == steps
    return step_durations(times, start)


def run_hf(model: MusicgenForCausalLM, memory: torch.Tensor, steps: int, cfg_coef: float,
           hf_cache: str) -> torch.Tensor:
    """hf_cache "default": what generate builds for MusicgenForCausalLM alone, a single DynamicCache in which (in
    transformers 5.24) every step re-projects the encoder states and appends them to the self-attention cache, so
    its step cost grows fast. "encoder-decoder": an EncoderDecoderCache passed in, which caches the cross keys once
    (what MusicgenForConditionalGeneration gets); the fair comparison. Returns step durations [steps].
    """
    timer = StepTimer()
    options = {} if hf_cache == "default" else {"cache": EncoderDecoderCache(DynamicCache(), DynamicCache())}
    if cfg_coef != 1:
        # HF's CFG: the null branch's encoder states are zeros. MusicgenForConditionalGeneration also passes a zero
        # attention mask for them; MusicgenForCausalLM.generate mis-sizes an explicit encoder_attention_mask here,
        # and with bias-free projections zero states give the same zero cross-attention output without it.
        memory = torch.cat([memory, torch.zeros_like(memory)])
    input_ids = torch.full((BATCH * CODEBOOKS, 1), CARD, dtype=torch.long)
    start = time.perf_counter()
    model.generate(input_ids, encoder_hidden_states=memory, do_sample=True, top_k=TOP_K,
                   max_new_tokens=steps, num_return_sequences=1, guidance_scale=cfg_coef if cfg_coef != 1 else None,
                   logits_processor=[timer], **options)
    assert len(timer.times) == steps, len(timer.times)
    return step_durations(timer.times, start)


def hf_int8(model: MusicgenForCausalLM) -> MusicgenForCausalLM:
    """HF's model with every Linear dynamically quantized by torch (fbgemm, per-channel int8 weights, as ours)."""
    with warnings.catch_warnings():  # torch.ao.quantization warns that it moves to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, inplace=False)


@torch.inference_mode()
def run_no_cache(model: LMModel, memory: torch.Tensor, steps: int) -> float:
    """Steps per second when every step re-runs the whole prefix (delay pattern, no CFG)."""
    pattern = DelayPattern(CODEBOOKS).get_pattern(steps)
    codes = torch.zeros(BATCH, CODEBOOKS, steps, dtype=torch.long)
    sequence = pattern.build(codes, special_token=CARD)
    conditions = ConditionTensors(cross=memory, cross_mask=torch.ones(memory.shape[:2], dtype=torch.bool))
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        logits = model(sequence[:, :, :step], conditions)[:, :, -1]
        sequence[:, :, step] = sample(logits, temperature=1.0, top_k=TOP_K, top_p=0.0, generator=generator)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="decode steps per generation")
    parser.add_argument("--no-cache-steps", type=int, default=100, help="steps of the no-cache comparison")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each generation (median step time)")
    parser.add_argument("--hf-cache", choices=["encoder-decoder", "default"], default="encoder-decoder",
                        help="HF's cache: see run_hf")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LMModel(LMConfig(num_codebooks=CODEBOOKS, card=CARD, dim=DIM, num_heads=HEADS, num_layers=LAYERS,
                            ffn_dim=FFN)).eval()
    hf_config = MusicgenDecoderConfig(vocab_size=CARD, num_codebooks=CODEBOOKS, hidden_size=DIM, num_attention_heads=HEADS,
                                      num_hidden_layers=LAYERS, ffn_dim=FFN, pad_token_id=CARD, bos_token_id=CARD,
                                      decoder_start_token_id=CARD, max_position_embeddings=4096)
    hf = MusicgenForCausalLM(hf_config).eval()
    hf.generation_config.pad_token_id = hf.generation_config.bos_token_id = CARD
    hf.generation_config.decoder_start_token_id = CARD
    memory = torch.randn(BATCH, MEMORY, DIM)
    result = {"threads": torch.get_num_threads(), "steps": args.steps, "repeats": args.repeats, "batch": BATCH,
              "hf_cache": args.hf_cache,
              "ours_params": sum(p.numel() for p in model.parameters()),
              "hf_params": sum(p.numel() for p in hf.parameters())}
    hf_quantized = hf_int8(hf)
    for name, cfg_coef in (("no_cfg", 1.0), ("cfg", CFG_COEF)):
        generators = {"ours": our_generator(model, cfg_coef),
                      "ours_int8": our_generator(model, cfg_coef, weights="int8")}
        generators |= {row: our_generator(model, cfg_coef, compile=True, **options)
                       for row, options in COMPILED_ROWS.items()}
        first_runs = {}
        for row in COMPILED_ROWS:
            start = time.perf_counter()
            run_ours(generators[row], memory, args.steps)  # compiles the decode step
            first_runs[row] = time.perf_counter() - start
        runs = {"ours": [], "hf": [], "ours_int8": [], "hf_int8": []} | {row: [] for row in COMPILED_ROWS}
        for _ in range(args.repeats):  # interleaved, so a slow phase of the machine hits every row alike
            runs["ours"].append(run_ours(generators["ours"], memory, args.steps))
            runs["hf"].append(run_hf(hf, memory, args.steps, cfg_coef, args.hf_cache))
            runs["ours_int8"].append(run_ours(generators["ours_int8"], memory, args.steps))
            runs["hf_int8"].append(run_hf(hf_quantized, memory, args.steps, cfg_coef, args.hf_cache))
            for row in COMPILED_ROWS:
                runs[row].append(run_ours(generators[row], memory, args.steps))
        stats = {row: step_stats(durations) for row, durations in runs.items()}
        (ours_rate, ours_growth), (hf_rate, hf_growth) = stats["ours"], stats["hf"]
        (int8_rate, int8_growth), (hf_int8_rate, _) = stats["ours_int8"], stats["hf_int8"]
        result[name] = {"ours_steps_per_s": round(ours_rate, 2), "hf_steps_per_s": round(hf_rate, 2),
                        "ratio": round(ours_rate / hf_rate, 2), "ours_step_cost_growth": round(ours_growth, 3),
                        "hf_step_cost_growth": round(hf_growth, 3),
                        "ours_int8_steps_per_s": round(int8_rate, 2), "int8_ratio": round(int8_rate / hf_rate, 2),
                        "ours_int8_step_cost_growth": round(int8_growth, 3),
                        "hf_int8_steps_per_s": round(hf_int8_rate, 2),
                        "int8_vs_hf_int8": round(int8_rate / hf_int8_rate, 2)}
        for row in COMPILED_ROWS:  # e.g. ours_compiled_fp16_steps_per_s, compiled_fp16_ratio, compile_fp16_s
            rate, growth = stats[row]
            suffix = row.removeprefix("ours_compiled")
            result[name] |= {f"{row}_steps_per_s": round(rate, 2), f"compiled{suffix}_ratio": round(rate / hf_rate, 2),
                             f"{row}_step_cost_growth": round(growth, 3),
                             f"compile{suffix}_s": round(first_runs[row] - args.steps / rate, 1)}
        print(name, result[name], flush=True)
    cached_rate, _ = step_stats([run_ours(our_generator(model, 1.0), memory, args.no_cache_steps)])
    no_cache_rate = run_no_cache(model, memory, args.no_cache_steps)
    result["no_cache"] = {"steps": args.no_cache_steps, "ours_cached_steps_per_s": round(cached_rate, 2),
                          "ours_no_cache_steps_per_s": round(no_cache_rate, 2),
                          "speedup": round(cached_rate / no_cache_rate, 2)}
    print("no_cache", result["no_cache"], flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
