"""The batcher: each request's audio equals the pipeline's for that request alone, whatever joined or left the batch
around it (mixed prompts, seeds, sampling parameters and durations); a cancelled job frees its row; the queue limit
and bad fields are refused by name."""
import asyncio
from dataclasses import asdict

import pytest
import torch

from conditioners.attributes import WavCondition
from lm.generator import GenerationConfig
from pipeline import GenerationPipeline
from serve.batcher import Batcher, GenerationRequest, Job, QueueFull

WINDOW = GenerationConfig(context_frames=150, extend_stride_frames=100)  # 2 s at 75 Hz


@pytest.fixture(scope="module")
def pipeline(serve_export) -> GenerationPipeline:
    return GenerationPipeline.load(serve_export, generation=WINDOW)


def solo(pipeline: GenerationPipeline, request: GenerationRequest) -> torch.Tensor:
    """The pipeline's audio [C, samples] for the request alone, its sampling overrides as the GenerationConfig."""
    overrides = {name: getattr(request, name) for name in ("cfg_coef", "temperature", "top_k", "top_p")
                 if getattr(request, name) is not None}
    alone = GenerationPipeline(pipeline.lm, pipeline.pattern, pipeline.conditioner, pipeline.codec,
                               GenerationConfig(**asdict(pipeline.generator.config) | overrides))
    return alone.generate([request.prompt], request.duration, request.melody, request.continuation,
                          seeds=[request.seed], negative=None if request.negative is None else [request.negative]
                          ).audio[0]


async def collect(job: Job) -> torch.Tensor:
    return torch.cat([chunk async for chunk in job], dim=-1)


def assert_same_audio(received: torch.Tensor, expected: torch.Tensor) -> None:
    """The tolerance of the pipeline's own streamed == offline test: the codec decodes in chunks."""
    assert received.shape == expected.shape
    assert (received - expected).abs().max() < 1e-5


REQUESTS = [
    GenerationRequest("calm piano", duration=0.4, seed=1),
    GenerationRequest("a fast folk reel played on a violin in d major", duration=0.15, seed=2, temperature=0.7,
                      top_k=0, top_p=0.9, cfg_coef=1.0),
    GenerationRequest(None, duration=0.3, seed=3, top_k=20),
    GenerationRequest("organ", duration=0.25, seed=4, negative="drums and bass", cfg_coef=5.0),
    GenerationRequest("brass section march", duration=0.1, seed=5, temperature=0.0),
    GenerationRequest("calm piano", duration=0.4, seed=6, temperature=1.3, top_k=5, top_p=0.5, cfg_coef=2.0),
]


def test_batched_requests_equal_their_solo_runs(pipeline):
    """Three rows for six requests, and one more request after the first audio: requests join mid-batch into
    freed rows, beside neighbours of other lengths and sampling parameters. A continuation runs alone, in order."""
    clip = (torch.randn(1, 2400, generator=torch.Generator().manual_seed(0)) * 0.1, 24000)  # 0.1 s
    late = GenerationRequest("soft strings", duration=0.2, seed=7, continuation=clip)
    later = GenerationRequest("upbeat electronic dance music", duration=0.3, seed=8, top_p=0.8)

    async def scenario() -> list[torch.Tensor]:
        batcher = Batcher(pipeline, max_batch=3, max_queue=16, chunk_frames=4)
        await batcher.start()
        jobs = [batcher.submit(request) for request in REQUESTS]
        first = jobs[0].__aiter__()
        chunks = [await anext(first)]  # the batch is running: the next two arrive while it decodes
        jobs += [batcher.submit(late), batcher.submit(later)]
        chunks += [chunk async for chunk in first]
        audio = [torch.cat(chunks, dim=-1)] + list(await asyncio.gather(*(collect(job) for job in jobs[1:])))
        await batcher.stop()
        return audio

    audio = asyncio.run(scenario())
    for request, received in zip(REQUESTS + [late, later], audio):
        assert_same_audio(received, solo(pipeline, request))
    assert not torch.allclose(audio[0], audio[5])  # same caption and length, other seed and sampling


def test_a_cancelled_job_frees_its_row_and_the_others_finish_identically(pipeline):
    long = GenerationRequest("calm piano", duration=1.0, seed=1)
    cancelled = GenerationRequest("organ", duration=1.0, seed=2)
    short = GenerationRequest("soft strings", duration=0.1, seed=3)
    finished = []

    async def finish(name: str, job: Job) -> torch.Tensor:
        audio = await collect(job)
        finished.append(name)
        return audio

    async def scenario() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        batcher = Batcher(pipeline, max_batch=2, max_queue=4, chunk_frames=4)
        await batcher.start()
        jobs = [batcher.submit(request) for request in (long, cancelled, short)]
        received = []
        async for chunk in jobs[1]:  # the client leaves after its first chunk
            received.append(chunk)
            jobs[1].cancel()
        long_audio, short_audio = await asyncio.gather(finish("long", jobs[0]), finish("short", jobs[2]))
        rows_left = len(batcher._rows.rows)
        await batcher.stop()
        assert rows_left == 0
        return long_audio, short_audio, received

    long_audio, short_audio, received = asyncio.run(scenario())
    assert finished == ["short", "long"]  # the short request took the freed row, not the long one's end
    assert_same_audio(long_audio, solo(pipeline, long))
    assert_same_audio(short_audio, solo(pipeline, short))
    assert 0 < sum(chunk.shape[-1] for chunk in received) < solo(pipeline, cancelled).shape[-1]


def test_the_queue_refuses_requests_past_max_queue_and_forgets_cancelled_ones(pipeline):
    async def scenario() -> None:
        batcher = Batcher(pipeline, max_batch=1, max_queue=2, chunk_frames=4)
        await batcher.start()
        running = batcher.submit(GenerationRequest("calm piano", duration=1.5, seed=1))
        await anext(running.__aiter__())  # it holds the only row now
        waiting = [batcher.submit(GenerationRequest("organ", duration=0.1, seed=seed)) for seed in (2, 3)]
        with pytest.raises(QueueFull, match="max_queue=2"):
            batcher.submit(GenerationRequest("organ", duration=0.1, seed=4))
        waiting[0].cancel()
        waiting.append(batcher.submit(GenerationRequest("organ", duration=0.1, seed=4)))
        for job in [running] + waiting:
            job.cancel()
        await batcher.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("field, value, message", [
    ("duration", 0.0, "duration must be > 0"),
    ("duration", 2.5, r"duration must be <= 2 s \(one window"),
    ("seed", -1, "seed must be in"),
    ("temperature", -0.5, "temperature must be >= 0"),
    ("top_k", -1, "top_k must be >= 0"),
    ("top_k", 257, r"top_k must be in \[0, card=256\]"),
    ("top_p", 1.5, r"top_p must be in \[0, 1\]"),
    ("cfg_coef", -1.0, "cfg_coef must be >= 0"),
    ("melody", "wav", "melody was given but this model has no melody conditioner"),
])
def test_check_names_the_bad_field(pipeline, field, value, message):
    batcher = Batcher(pipeline, max_batch=1, max_queue=1, chunk_frames=4)
    if field == "melody":
        value = WavCondition(wav=torch.zeros(1, 2400), sample_rate=24000)
    good = dict(prompt="calm piano", duration=0.2, seed=1)
    with pytest.raises(ValueError, match=message):
        batcher.check(GenerationRequest(**good | {field: value}))
    batcher.check(GenerationRequest(**good))
