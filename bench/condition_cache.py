"""Training-step speed of the text conditioner with and without the encoder-output cache.

Peer: the uncached path, which re-runs the frozen encoder on every step as AudioCraft's T5Conditioner does. Each
step is what LM training does to the conditioner: encode a batch of captions drawn from a fixed caption set, project
to the LM width, backpropagate into the projection and update it. The cached conditioner has seen every caption
once (steady state after the first epoch). Steps of the two alternate so machine noise hits both alike.

    python -m bench.condition_cache [--encoder minilm] [--batch-size 16] [--steps 30] [--threads 1] [--device cpu]
"""
import argparse
import itertools
import json
import statistics
import time

import torch

from conditioners.text import TextConditioner

GENRES = ["ambient", "techno", "jazz", "folk", "metal", "lofi hip hop", "orchestral", "reggae"]
MOODS = ["a calm", "an energetic", "a melancholic", "a joyful"]
INSTRUMENTS = ["with piano and soft strings", "driven by distorted guitars", "with a warm analog synth bass"]


def captions() -> list[str]:
    """96 distinct music captions, the fixed caption set of the benchmark."""
    return [
        f"{mood} {genre} track {instrument}" for mood, genre, instrument in itertools.product(MOODS, GENRES, INSTRUMENTS)
    ]


def training_step(conditioner: TextConditioner, optimizer: torch.optim.Optimizer, texts: list[str]) -> float:
    """One conditioner step of LM training; returns its wall time in milliseconds."""
    start = time.perf_counter()
    condition = conditioner(texts)
    loss = condition.embeddings.square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if condition.embeddings.is_cuda:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="minilm", help="'minilm' or a local HF encoder directory")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CI boxes have 2 shared cores)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    caption_set = captions()
    variants = {}
    for name, cache_size in [("uncached", 0), ("cached", len(caption_set))]:
        conditioner = TextConditioner(
            encoder=args.encoder, output_dim=512, pooling="tokens", max_length=64, dtype="float32",
            cache_size=cache_size,
        ).to(args.device)
        optimizer = torch.optim.SGD(conditioner.projection.parameters(), lr=1e-3)
        for first in range(0, len(caption_set), args.batch_size):  # warm-up epoch: fills the cache
            training_step(conditioner, optimizer, caption_set[first : first + args.batch_size])
        variants[name] = (conditioner, optimizer, [])

    generator = torch.Generator().manual_seed(0)
    for _ in range(args.steps):
        batch = torch.randint(len(caption_set), (args.batch_size,), generator=generator).tolist()
        texts = [caption_set[index] for index in batch]
        for conditioner, optimizer, timings in variants.values():
            timings.append(training_step(conditioner, optimizer, texts))

    uncached_ms = statistics.median(variants["uncached"][2])
    cached_ms = statistics.median(variants["cached"][2])
    print(f"median conditioner step: uncached {uncached_ms:.2f} ms, cached {cached_ms:.2f} ms")
    print(
        json.dumps(
            {
                "benchmark": "condition_cache",
                "peer": "uncached (encoder re-run every step, as AudioCraft)",
                "encoder": args.encoder,
                "device": args.device,
                "threads": args.threads,
                "batch_size": args.batch_size,
                "steps": args.steps,
                "uncached_ms": round(uncached_ms, 3),
                "cached_ms": round(cached_ms, 3),
                "speedup": round(uncached_ms / cached_ms, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
