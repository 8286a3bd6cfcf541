"""The HTTP API and the web page around one GenerationPipeline (docs/serve.md).

    POST /v1/generate         JSON body, or multipart: a `request` JSON field plus optional `melody` /
                              `continuation` audio files -> audio/wav for one prompt, application/zip of
                              000.wav, 001.wav ... for several; header X-Seeds lists the seeds used
    POST /v1/generate/stream  the same request with exactly one prompt -> audio/wav sent as it is decoded
    GET  /v1/health  /v1/model  /openapi.json  / (the page, serve/static/)

Each prompt becomes one GenerationRequest for the Batcher, which generates in a worker thread, so the event loop
stays free to stream. Everything is checked before anything is queued, so a stream's status line means its
request was accepted: 422 names the invalid field, 413 the size limit exceeded (duration, prompts, body), 429 the
full queue, 400 the upload that is not audio. The server keeps serving after each of them.
"""
import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import soundfile
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from torch import Tensor

from conditioners.attributes import WavCondition
from pipeline import MELODY, GenerationPipeline, item_seeds
from serve import wav
from serve.batcher import Batcher, GenerationRequest, Job, QueueFull
from serve.config import ServeLimits

STATIC = Path(__file__).parent / "static"
UPLOADS = ("melody", "continuation")  # the multipart file fields
Seed = Annotated[int, Field(ge=0, lt=2**64)]


class GenerateBody(BaseModel):
    """The request (the JSON body, or the `request` field of the multipart variant). Sampling fields left out or
    null take the server's defaults (GET /v1/model, `generation`)."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str | None] = Field(min_length=1, description="one caption per output; null: unconditional")
    duration: float = Field(gt=0, description="seconds of audio per prompt, a continuation included")
    seed: int = Field(0, ge=0, lt=2**32, description="prompt i gets seed * 100003 + i unless `seeds` is given")
    seeds: list[Seed] | None = Field(None, description="one sampling seed per prompt")
    negative: list[str | None] | None = Field(None, description="one caption per prompt to guide away from")
    cfg_coef: float | None = Field(None, description="guidance scale; 1 = off")
    temperature: float | None = Field(None, description="softmax temperature; 0 = greedy")
    top_k: int | None = Field(None, description="sample among the k most likely tokens; 0 = off")
    top_p: float | None = Field(None, description="nucleus mass in [0, 1]; 0 = off")


class BodyLimit:
    """Answers 413 to a request whose body is over max_body_bytes before the app sees it. The body is read up to
    the limit and replayed to the app, so a chunked upload without Content-Length is caught as well."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self.refuse(scope, receive, send)
        messages: list[Message] = []
        size = 0
        while not messages or messages[-1].get("more_body", False):
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client left
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return await self.refuse(scope, receive, send)

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is over the limit max_body_bytes={self.max_body_bytes}"
        await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)


def resolve_max_duration(pipeline: GenerationPipeline, limits: ServeLimits) -> float:
    """limits.max_duration, or the model's window when it is None."""
    if limits.max_duration is not None:
        return limits.max_duration
    context = pipeline.generator.config.context_frames
    if context is None:
        raise ValueError("max_duration must be set: the model has no window (generation context_frames is null)")
    return context / pipeline.codec.frame_rate


def read_upload(name: str, content: bytes) -> tuple[Tensor, int]:
    """An uploaded audio file -> (wav [C, T] float32, sample_rate); 400 naming the field when it is not audio."""
    try:
        samples, sample_rate = soundfile.read(io.BytesIO(content), dtype="float32", always_2d=True)  # [T, C]
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise HTTPException(400, f"{name}: the upload is not audio soundfile can read ({error})") from error
    if samples.shape[0] == 0:
        raise HTTPException(400, f"{name}: the upload holds no samples")
    return torch.from_numpy(samples.T.copy()), sample_rate


def validation_error(error: ValidationError, prefix: tuple[str, ...]) -> RequestValidationError:
    """pydantic's errors as FastAPI reports a body's: loc starts with `prefix`, so the field is named."""
    return RequestValidationError([{**item, "loc": (*prefix, *item["loc"])}
                                   for item in error.errors(include_url=False, include_context=False)])


async def read_body(request: Request) -> tuple[GenerateBody, dict[str, tuple[Tensor, int]]]:
    """The request and its uploads by field name, from a JSON or a multipart body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=len(UPLOADS), max_fields=1)
        unknown = sorted(set(form.keys()) - {"request", *UPLOADS})
        if unknown:
            raise HTTPException(422, f"{unknown[0]}: unknown form field (fields: request, {', '.join(UPLOADS)})")
        text = form.get("request")
        if not isinstance(text, str):
            raise HTTPException(422, "request: the multipart body needs a `request` field holding the JSON request")
        try:
            body = GenerateBody.model_validate_json(text)
        except ValidationError as error:
            raise validation_error(error, ("body", "request")) from error
        uploads = {}
        for name in UPLOADS:
            upload = form.get(name)
            if upload is None:
                continue
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, f"{name}: must be a file upload")
            uploads[name] = read_upload(name, await upload.read())
        return body, uploads
    if not content_type.startswith("application/json"):
        raise HTTPException(415, f"Content-Type must be application/json or multipart/form-data, got "
                                 f"{content_type or 'none'}")
    try:
        return GenerateBody.model_validate_json(await request.body()), {}
    except ValidationError as error:
        raise validation_error(error, ("body",)) from error


def generation_requests(body: GenerateBody, uploads: dict[str, tuple[Tensor, int]], max_duration: float,
                        max_prompts: int) -> list[GenerationRequest]:
    """One request per prompt, with its seed; the limits are checked here (413), the fields by the batcher."""
    count = len(body.prompts)
    if count > max_prompts:
        raise HTTPException(413, f"prompts: {count} prompts is over the limit max_prompts={max_prompts}")
    if body.duration > max_duration:
        raise HTTPException(413, f"duration: {body.duration} s is over the limit max_duration={max_duration:g} s")
    for name, values in (("seeds", body.seeds), ("negative", body.negative)):
        if values is not None and len(values) != count:
            raise HTTPException(422, f"{name}: must give one value per prompt ({count}), got {len(values)}")
    seeds = body.seeds or item_seeds(body.seed, count)
    negative = body.negative or [None] * count
    melody = None if "melody" not in uploads else WavCondition(*uploads["melody"])
    return [GenerationRequest(prompt=prompt, duration=body.duration, seed=seed, negative=caption,
                              cfg_coef=body.cfg_coef, temperature=body.temperature, top_k=body.top_k,
                              top_p=body.top_p, melody=melody, continuation=uploads.get("continuation"))
            for prompt, seed, caption in zip(body.prompts, seeds, negative)]


async def collect(job: Job) -> Tensor:
    """A job's audio [C, samples], its chunks concatenated."""
    return torch.cat([chunk async for chunk in job], dim=-1)


async def disconnected(request: Request) -> None:
    """Returns when the client has gone: its body is read already, so the next message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def zip_of_wavs(wavs: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index, content in enumerate(wavs):
            archive.writestr(f"{index:03d}.wav", content)
    return buffer.getvalue()


def request_body_docs() -> dict:
    """The OpenAPI request body of both generation routes (they read it themselves, to accept multipart)."""
    schema = GenerateBody.model_json_schema()
    multipart = {"type": "object", "required": ["request"], "properties": {
        "request": {"type": "string", "description": "the JSON request, as the application/json body"},
        **{name: {"type": "string", "format": "binary", "description": f"{name} audio file"} for name in UPLOADS}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema},
                                                          "multipart/form-data": {"schema": multipart}}}}


def create_app(pipeline: GenerationPipeline, limits: ServeLimits) -> FastAPI:
    """The app around `pipeline`; its Batcher starts and stops with the app's lifespan."""
    max_duration = resolve_max_duration(pipeline, limits)
    batcher = Batcher(pipeline, limits.max_batch, limits.max_queue, limits.chunk_frames)
    sample_rate, channels = pipeline.codec.sample_rate, pipeline.codec.channels

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="codeclm", summary="text (and melody) to music, streamed as it is generated",
                  lifespan=lifespan)
    app.add_middleware(BodyLimit, max_body_bytes=limits.max_body_bytes)

    async def submit(request: Request, streaming: bool) -> tuple[list[Job], list[int]]:
        """Parse, check and queue a request: its jobs (one per prompt) and seeds."""
        body, uploads = await read_body(request)
        if streaming and len(body.prompts) != 1:
            raise HTTPException(422, f"prompts: a stream takes exactly one prompt, got {len(body.prompts)}")
        requests = generation_requests(body, uploads, max_duration, limits.max_prompts)
        try:
            for item in requests:
                batcher.check(item)
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        jobs = []
        try:
            for item in requests:
                jobs.append(batcher.submit(item))
        except QueueFull as error:
            for job in jobs:
                job.cancel()
            raise HTTPException(429, str(error)) from error
        return jobs, [item.seed for item in requests]

    @app.post("/v1/generate", openapi_extra=request_body_docs(), response_class=Response,
              responses={200: {"content": {"audio/wav": {}, "application/zip": {}}}})
    async def generate(request: Request) -> Response:
        """The whole clip: audio/wav for one prompt, a zip of 000.wav ... for several."""
        jobs, seeds = await submit(request, streaming=False)
        generation = asyncio.ensure_future(asyncio.gather(*(collect(job) for job in jobs)))
        client_gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({generation, client_gone}, return_when=asyncio.FIRST_COMPLETED)
            if not generation.done():
                generation.cancel()
                return Response(status_code=499)  # nginx's "client closed request": nobody reads it
            audio = generation.result()
        finally:
            client_gone.cancel()
            for job in jobs:
                job.cancel()  # frees the rows of a client that left or of a failed request; no-op once finished
        wavs = [wav.wav_bytes(item, sample_rate) for item in audio]
        headers = {"X-Seeds": ",".join(map(str, seeds))}
        if len(wavs) == 1:
            return Response(wavs[0], media_type="audio/wav", headers=headers)
        return Response(zip_of_wavs(wavs), media_type="application/zip", headers=headers)

    @app.post("/v1/generate/stream", openapi_extra=request_body_docs(), response_class=StreamingResponse,
              responses={200: {"content": {"audio/wav": {}}}})
    async def generate_stream(request: Request) -> StreamingResponse:
        """One prompt's WAV, sent as it is decoded: a header with unknown sizes (0xFFFFFFFF), then float32 frames."""
        (job,), seeds = await submit(request, streaming=True)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                yield wav.header(sample_rate, channels)
                async for chunk in job:
                    yield wav.frames(chunk)
            finally:
                job.cancel()  # a client that disconnects frees its row

        return StreamingResponse(chunks(), media_type="audio/wav", headers={"X-Seeds": str(seeds[0])})

    @app.get("/v1/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model() -> dict:
        """What the server generates and accepts: audio format, conditioning kinds, defaults and limits."""
        generation = pipeline.generator.config
        conditioner = pipeline.conditioner
        conditioning = [kind for kind, present in (("text", len(conditioner.text) + len(conditioner.lookup) > 0),
                                                   ("melody", MELODY in conditioner.chroma),
                                                   ("continuation", True)) if present]
        return {
            "sample_rate": sample_rate, "frame_rate": pipeline.codec.frame_rate, "channels": channels,
            "max_duration": max_duration, "conditioning": conditioning,
            "generation": {"cfg_coef": generation.cfg_coef, "temperature": generation.temperature,
                           "top_k": generation.top_k, "top_p": generation.top_p},
            "limits": {"max_duration": max_duration, "max_prompts": limits.max_prompts,
                       "max_queue": limits.max_queue, "max_body_bytes": limits.max_body_bytes,
                       "max_batch": limits.max_batch, "chunk_frames": limits.chunk_frames},
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
