"""Concurrent requests generated together: continuous batching over one GenerationPipeline.

    batcher = Batcher(pipeline, max_batch=8, max_queue=32, chunk_frames=8)
    await batcher.start()
    job = batcher.submit(GenerationRequest(prompt="calm piano", duration=4, seed=1))
    async for chunk in job:   # [C, n] float32 audio, as it is decoded
        ...

One worker thread owns the model, so the event loop stays free to stream. At every decode step boundary it moves
waiting requests into free rows of a `RowBatch` (lm/row_batch.py): a request that arrives while others generate
joins them at the next step, each row at its own position, and a finished or cancelled row leaves at once, its
row free for the next request. The requests that join at one step (a cohort) reach every frame at the same step:
one streaming copy of the codec decodes their codes together, `chunk_frames` frames at a time as they become
final, as `GenerationPipeline.stream` does for a batch (the chunks of a streaming codec concatenate to its offline
decode whatever their size, so the chunking does not change the audio).

A request's audio is the one `GenerationPipeline.generate([prompt], duration, seeds=[seed])` gives it (with its
sampling overrides as the pipeline's GenerationConfig), whoever shares its batch. Requests with a melody or a
continuation, and every request of a model whose text conditions are prepended or added rather than attended,
run alone through `GenerationPipeline.stream`, in arrival order: the running batch finishes first and requests
behind them wait. A batched request must fit in one generation window (context_frames); `check` refuses longer.
"""
import asyncio
import copy
import threading
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from codec.codec import Codec
from conditioners.attributes import WavCondition
from lm.generator import GenerationConfig, LMGenerator
from lm.row_batch import Row, RowBatch
from lm.sampling import Sampling
from pipeline import GenerationPipeline

OVERRIDES = ("cfg_coef", "temperature", "top_k", "top_p")  # what a request may change of the GenerationConfig
_END = object()  # a job's last item


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt's generation."""

    prompt: str | None  # None: unconditional
    duration: float  # seconds
    seed: int
    negative: str | None = None  # a caption to guide away from
    cfg_coef: float | None = None  # None: the pipeline's GenerationConfig value; likewise the three below
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    melody: WavCondition | None = None
    continuation: tuple[Tensor, int] | None = None  # (wav [C, T], sample_rate)


class QueueFull(Exception):
    """max_queue requests already wait for a row."""


class Job:
    """One submitted request: async-iterate it (once) for its audio chunks [C, n] float32; their concatenation is
    the request's audio. An error in its generation is raised by the iteration."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self._loop = loop
        self._chunks: asyncio.Queue = asyncio.Queue()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop generating (a client that left): the row is freed at the next step boundary; no-op once finished."""
        self._cancelled.set()

    async def __aiter__(self):
        while (item := await self._chunks.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def send(self, item: Tensor | BaseException | object) -> None:
        """From the worker thread: a chunk [C, n], an error, or _END (dropped once the event loop has closed)."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._chunks.put_nowait, item)


@dataclass(eq=False)
class _Member:
    """A batched job and its row."""

    job: Job
    row: Row
    live: bool = True  # False once its job has ended (finished, cancelled or failed)


@dataclass(eq=False)
class _Cohort:
    """The jobs that joined the batch at one step boundary. Their rows reach each frame at the same step, so one
    streaming copy of the codec decodes their chunks as one batch; a member that has left is decoded as zeros
    (codec rows are independent) until the whole cohort has left."""

    members: list[_Member]
    codec: Codec
    session: ExitStack  # the codec in streaming mode for len(members) rows
    decoded: int = 0  # frames sent


class Batcher:
    def __init__(self, pipeline: GenerationPipeline, max_batch: int, max_queue: int, chunk_frames: int):
        """max_batch: rows generated together; max_queue: requests waiting for a row (more: QueueFull);
        chunk_frames: codec frames per chunk (the last one may be shorter)."""
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue), ("chunk_frames", chunk_frames)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        pipeline.check_streams()
        self.pipeline, self.max_batch, self.max_queue, self.chunk_frames = pipeline, max_batch, max_queue, chunk_frames
        self._rows = RowBatch(pipeline.generator.model, pipeline.pattern, max_batch)
        self._codecs = [copy.deepcopy(pipeline.codec) for _ in range(max_batch)]  # one streaming decoder per cohort
        with torch.inference_mode():
            probe, _ = pipeline.conditions(["a caption"], num_frames=1)
        self._text_attended = probe.prepend is None and probe.add is None  # else every request runs alone
        self._waiting: deque[Job] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def check(self, request: GenerationRequest) -> None:
        """Refuse a request that cannot be generated, with a ValueError naming the field."""
        pipeline = self.pipeline
        if request.prompt is not None and not isinstance(request.prompt, str):
            raise ValueError(f"prompt must be a caption or None, got {type(request.prompt).__name__}")
        if not 0 <= request.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {request.seed}")
        pipeline.check(1, request.duration, request.melody, request.continuation, [request.seed],
                       None if request.negative is None else [request.negative])
        config = self.config(request)
        if config.top_k > pipeline.lm.config.card:
            raise ValueError(f"top_k must be in [0, card={pipeline.lm.config.card}], got {config.top_k}")
        context = config.context_frames
        if context is not None and pipeline.num_frames(request.duration) > context and not self.runs_alone(request):
            raise ValueError(f"duration must be <= {context / pipeline.codec.frame_rate:g} s (one window of the "
                             f"model, context_frames={context}), got {request.duration}")

    def runs_alone(self, request: GenerationRequest) -> bool:
        """Generated through GenerationPipeline.stream rather than in the batch (see the module docstring)."""
        return request.melody is not None or request.continuation is not None or not self._text_attended

    def config(self, request: GenerationRequest) -> GenerationConfig:
        """The pipeline's GenerationConfig with the request's overrides (checked: a ValueError names the field)."""
        overrides = {name: getattr(request, name) for name in OVERRIDES if getattr(request, name) is not None}
        return replace(self.pipeline.generator.config, **overrides)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="batcher", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish the current step, then end every running and waiting job with an error."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def submit(self, request: GenerationRequest) -> Job:
        """Queue a request (checked first); raises QueueFull when max_queue requests already wait."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("submit needs a started batcher (await batcher.start())")
        self.check(request)
        job = Job(request, self._loop)
        with self._wakeup:
            if sum(not waiting.cancelled for waiting in self._waiting) >= self.max_queue:
                raise QueueFull(f"the queue is full: max_queue={self.max_queue} requests already wait for a row")
            self._waiting.append(job)
            self._wakeup.notify()
        return job

    def _work(self) -> None:
        """The worker thread: at each step boundary admit waiting jobs, decode one step, send the final frames."""
        cohorts: list[_Cohort] = []
        with torch.inference_mode():
            while True:
                with self._wakeup:
                    while not (self._stopping or self._waiting or cohorts):
                        self._wakeup.wait()
                    if self._stopping:
                        break
                    joining, alone = self._take(len(self._rows.rows))
                if alone is not None:
                    self._generate_alone(alone)
                    continue
                if joining:
                    self._join(joining, cohorts)
                self._step(cohorts)
            stopped = RuntimeError("the server is stopping")
            for cohort in cohorts:
                for member in cohort.members:
                    self._end(member, stopped)
            self._release(cohorts)
        with self._wakeup:
            for job in self._waiting:
                job.send(stopped)
            self._waiting.clear()

    def _take(self, busy: int) -> tuple[list[Job], Job | None]:
        """Pop waiting jobs in arrival order (holding the lock): as many as there are free rows, or one that runs
        alone once no row is busy."""
        joining = []
        while self._waiting and busy + len(joining) < self.max_batch:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft().send(_END)
            elif self.runs_alone(job.request):
                if busy or joining:
                    break  # it waits for the batch to drain; the jobs behind it wait with it
                return [], self._waiting.popleft()
            else:
                joining.append(self._waiting.popleft())
        return joining, None

    def _join(self, jobs: list[Job], cohorts: list[_Cohort]) -> None:
        """Give each job a row; together they form a cohort."""
        members = []
        for job in jobs:
            request = job.request
            try:
                config = self.config(request)
                num_frames = self.pipeline.num_frames(request.duration)
                conditions, negative = self.pipeline.conditions(
                    [request.prompt], num_frames, negative=None if request.negative is None else [request.negative])
                row = self._rows.add(num_frames, conditions, negative,
                                     Sampling(config.temperature, config.top_k, config.top_p), config.cfg_coef,
                                     torch.Generator(self.pipeline.device).manual_seed(request.seed))
            except Exception as error:  # this request fails, the others go on
                job.send(error)
                continue
            members.append(_Member(job, row))
        if members:
            codec = self._codecs.pop()
            session = ExitStack()
            session.enter_context(codec.streaming(len(members)))
            cohorts.append(_Cohort(members, codec, session))

    def _step(self, cohorts: list[_Cohort]) -> None:
        for cohort in cohorts:
            for member in cohort.members:
                if member.live and member.job.cancelled:
                    self._end(member)
        try:
            if self._rows.rows:
                self._rows.step()
                for cohort in cohorts:
                    self._send_final(cohort)
        except Exception as error:  # a failed step fails every row in it
            for cohort in cohorts:
                for member in cohort.members:
                    self._end(member, error)
        for row in [row for row in self._rows.rows if row.done]:
            self._rows.remove(row)  # its last frames may wait for its cohort's next chunk
        self._release(cohorts)

    def _send_final(self, cohort: _Cohort) -> None:
        """Decode and send the cohort's new final frames once there are chunk_frames of them, or a row is done."""
        live = [member for member in cohort.members if member.live]
        if not live:
            return
        end = min(member.row.final for member in live)
        ending = [member for member in live if member.row.done and member.row.final == end]
        if end == cohort.decoded or (end - cohort.decoded < self.chunk_frames and not ending):
            return
        K = self.pipeline.lm.config.num_codebooks
        codes = torch.cat([member.row.codes[:, :, cohort.decoded:end] if member.live else
                           torch.zeros(1, K, end - cohort.decoded, dtype=torch.long, device=self.pipeline.device)
                           for member in cohort.members])  # [members, K, n]
        audio = cohort.codec.decode(codes).float().cpu()  # [members, C, n * hop_length]
        for member, member_audio in zip(cohort.members, audio):
            if member.live:
                member.job.send(member_audio)
        cohort.decoded = end
        for member in ending:
            self._end(member)

    def _end(self, member: _Member, error: Exception | None = None) -> None:
        """End a member's job (no-op once ended) and free its row."""
        if not member.live:
            return
        if member.row in self._rows.rows:
            self._rows.remove(member.row)
        member.live = False
        member.job.send(_END if error is None else error)

    def _release(self, cohorts: list[_Cohort]) -> None:
        """Return the codecs of cohorts whose members have all left."""
        for cohort in [cohort for cohort in cohorts if not any(member.live for member in cohort.members)]:
            cohort.session.close()
            self._codecs.append(cohort.codec)
            cohorts.remove(cohort)

    def _generate_alone(self, job: Job) -> None:
        """A request outside the batch's scope, through GenerationPipeline.stream with its own settings."""
        request = job.request
        pipeline = copy.copy(self.pipeline)  # shares every module; only the sampling settings differ
        pipeline.generator = LMGenerator(self.pipeline.generator.model, self.pipeline.pattern, self.config(request))
        try:
            for chunk in pipeline.stream([request.prompt], request.duration, request.melody, request.continuation,
                                         seeds=[request.seed],
                                         negative=None if request.negative is None else [request.negative],
                                         chunk_frames=self.chunk_frames):
                if job.cancelled:
                    break
                if self._stopping:
                    raise RuntimeError("the server is stopping")
                job.send(chunk.audio[0])
        except Exception as error:
            job.send(error)
            return
        job.send(_END)
