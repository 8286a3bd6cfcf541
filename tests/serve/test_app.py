"""The HTTP API: its audio equals the pipeline's for the same request, the stream is the same WAV, bad input and
limits are refused naming the field or the limit while the server keeps serving, and a client that leaves
mid-stream does not hold up the others."""
import io
import json
import struct
import zipfile

import httpx
import pytest
import soundfile
import torch
from fastapi.testclient import TestClient
from hydra import compose, initialize_config_dir

from builders import build_generation
from conditioners.attributes import WavCondition
from lm.generator import GenerationConfig
from pipeline import GenerationPipeline, item_seeds
from serve import wav
from serve.app import create_app
from serve.config import ServeLimits
from tests.serve.conftest import ROOT, running_server, save_tiny_export

LIMITS = ServeLimits(max_duration=None, max_prompts=4, max_queue=8, max_body_bytes=200_000, max_batch=4,
                     chunk_frames=4)
WINDOW = GenerationConfig(context_frames=150, extend_stride_frames=100)  # 2 s at 75 Hz: the default max_duration


@pytest.fixture(scope="module")
def pipeline(serve_export) -> GenerationPipeline:
    return GenerationPipeline.load(serve_export, generation=WINDOW)


@pytest.fixture(scope="module")
def client(pipeline) -> TestClient:
    with TestClient(create_app(pipeline, LIMITS)) as client:
        yield client


def read_wav(content: bytes) -> torch.Tensor:
    """A WAV's samples [C, T], checking it is the server's float32 format."""
    assert soundfile.info(io.BytesIO(content)).subtype == "FLOAT"
    samples, _ = soundfile.read(io.BytesIO(content), dtype="float32", always_2d=True)
    return torch.from_numpy(samples.T.copy())


def solo(pipeline: GenerationPipeline, prompt: str | None, seed: int, duration: float = 0.3,
         negative: str | None = None) -> torch.Tensor:
    """The pipeline's own audio [C, T] for one prompt."""
    output = pipeline.generate([prompt], duration, seeds=[seed], negative=None if negative is None else [negative])
    return output.audio[0]


def test_the_wav_module_writes_what_soundfile_reads_and_patches_a_stream_into_the_file():
    audio = torch.randn(2, 1001)
    whole = wav.wav_bytes(audio, 16000)
    assert len(whole) == wav.HEADER_BYTES + 2 * 1001 * 4
    assert torch.equal(read_wav(whole), audio)
    assert soundfile.info(io.BytesIO(whole)).samplerate == 16000
    streamed = wav.header(16000, 2) + wav.frames(audio[:, :500]) + wav.frames(audio[:, 500:])
    assert struct.unpack("<I", streamed[4:8])[0] == struct.unpack("<I", streamed[40:44])[0] == 0xFFFFFFFF
    assert wav.with_sizes(streamed) == whole
    assert torch.equal(read_wav(streamed), audio)  # a reader takes an unknown size as "to the end"


def test_generate_returns_the_pipelines_audio_for_the_seed(client, pipeline):
    response = client.post("/v1/generate", json={"prompts": ["calm piano"], "duration": 0.3, "seed": 3})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    seed = item_seeds(3, 1)[0]
    assert response.headers["x-seeds"] == str(seed)
    expected = solo(pipeline, "calm piano", seed)
    received = read_wav(response.content)
    assert received.shape == expected.shape
    assert (received - expected).abs().max() < 1e-5  # streamed decode == offline decode up to float rounding


def test_several_prompts_give_a_zip_of_wavs_each_equal_to_its_solo_run(client, pipeline):
    request = {"prompts": ["calm piano", None, "organ"], "duration": 0.3, "seeds": [7, 8, 9],
               "negative": ["drums", None, None]}
    response = client.post("/v1/generate", json=request)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    assert response.headers["x-seeds"] == "7,8,9"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.namelist() == ["000.wav", "001.wav", "002.wav"]
    for name, prompt, seed, negative in zip(archive.namelist(), request["prompts"], request["seeds"],
                                            request["negative"]):
        expected = solo(pipeline, prompt, seed, negative=negative)
        assert (read_wav(archive.read(name)) - expected).abs().max() < 1e-5, name
    default_seeds = client.post("/v1/generate", json={**request, "seeds": None, "seed": 5}).headers["x-seeds"]
    assert default_seeds == ",".join(map(str, item_seeds(5, 3)))


def test_the_streamed_bytes_with_their_sizes_filled_in_are_the_generate_wav(client):
    request = {"prompts": ["a fast folk reel"], "duration": 0.5, "seed": 11}
    whole = client.post("/v1/generate", json=request)
    with client.stream("POST", "/v1/generate/stream", json=request) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"] == "audio/wav"
        assert stream.headers["x-seeds"] == whole.headers["x-seeds"]
        pieces = list(stream.iter_raw())
    streamed = b"".join(pieces)
    assert len(pieces) > 2  # the header, then the audio in several chunks (chunk_frames=4 of ~40 frames)
    assert streamed[:wav.HEADER_BYTES] == wav.header(24000, 1)
    assert wav.with_sizes(streamed) == whole.content


def with_generation(pipeline: GenerationPipeline, generation: GenerationConfig) -> GenerationPipeline:
    """The same model, codec and conditioner with other generation settings."""
    return GenerationPipeline(pipeline.lm, pipeline.pattern, pipeline.conditioner, pipeline.codec, generation)


def test_sampling_fields_override_the_servers_defaults(client, pipeline):
    greedy = with_generation(pipeline, GenerationConfig(temperature=0.0, cfg_coef=1.0))
    request = {"prompts": ["organ"], "duration": 0.3, "seeds": [1], "temperature": 0, "cfg_coef": 1}
    expected = solo(greedy, "organ", seed=1)
    received = read_wav(client.post("/v1/generate", json=request).content)
    assert (received - expected).abs().max() < 1e-5
    sampled = read_wav(client.post("/v1/generate", json={**request, "temperature": 1}).content)
    assert (sampled - expected).abs().max() > 1e-2  # the field reached the generation


def multipart(request: dict, **files: bytes) -> dict:
    return {"data": {"request": json.dumps(request)},
            "files": {name: (f"{name}.wav", content, "audio/wav") for name, content in files.items()}}


GOOD = {"prompts": ["calm piano"], "duration": 0.3, "seeds": [4]}
BAD_REQUESTS = [  # (path, request keyword arguments, status, words the message must hold)
    ("/v1/generate", {"json": {**GOOD, "prompts": []}}, 422, ["prompts"]),
    ("/v1/generate", {"json": {**GOOD, "duration": 0}}, 422, ["duration"]),
    ("/v1/generate", {"json": {**GOOD, "duration": "long"}}, 422, ["duration"]),
    ("/v1/generate", {"json": {**GOOD, "bogus": 1}}, 422, ["bogus"]),
    ("/v1/generate", {"json": {**GOOD, "top_p": 1.5}}, 422, ["top_p"]),
    ("/v1/generate", {"json": {**GOOD, "temperature": -1}}, 422, ["temperature"]),
    ("/v1/generate", {"json": {**GOOD, "top_k": 257}}, 422, ["top_k"]),
    ("/v1/generate", {"json": {**GOOD, "cfg_coef": -2}}, 422, ["cfg_coef"]),
    ("/v1/generate", {"json": {**GOOD, "seeds": [1, 2]}}, 422, ["seeds"]),
    ("/v1/generate", {"json": {**GOOD, "negative": ["a", "b"]}}, 422, ["negative"]),
    ("/v1/generate", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, ["json"]),
    ("/v1/generate/stream", {"json": {**GOOD, "prompts": ["a", "b"], "seeds": None}}, 422, ["prompts"]),
    ("/v1/generate", {"json": {**GOOD, "duration": 2.5}}, 413, ["max_duration=2"]),
    ("/v1/generate", {"json": {**GOOD, "prompts": ["a"] * 5, "seeds": None}}, 413, ["max_prompts=4"]),
    ("/v1/generate", {"json": {**GOOD, "prompts": ["x" * 300_000]}}, 413, ["max_body_bytes=200000"]),
    ("/v1/generate", multipart(GOOD, continuation=b"RIFF not audio"), 400, ["continuation"]),
    ("/v1/generate", multipart(GOOD, melody=wav.wav_bytes(torch.zeros(1, 2400), 24000)), 422, ["melody"]),
    ("/v1/generate", multipart(GOOD, continuation=wav.wav_bytes(torch.zeros(1, 24000), 24000)), 422,
     ["continuation"]),
    ("/v1/generate", multipart(GOOD, accompaniment=b"..."), 422, ["accompaniment"]),
]


def test_bad_requests_are_refused_naming_the_field_or_limit_and_the_server_keeps_serving(client, pipeline):
    expected = solo(pipeline, "calm piano", seed=4)
    before = client.post("/v1/generate", json=GOOD)
    assert (read_wav(before.content) - expected).abs().max() < 1e-5
    for path, arguments, status, words in BAD_REQUESTS:
        response = client.post(path, **arguments)
        assert response.status_code == status, (path, arguments.get("json"), response.text)
        message = json.dumps(response.json()["detail"]).lower()
        assert all(word in message for word in words), (words, message)
        assert client.get("/v1/health").json() == {"status": "ok"}
    after = client.post("/v1/generate", json=GOOD)
    assert after.content == before.content


def test_a_continuation_upload_is_kept_at_the_start(client, pipeline):
    prompt_audio = solo(pipeline, "organ", seed=2, duration=0.2)  # [1, samples]: the codec's own output
    response = client.post("/v1/generate", **multipart(GOOD, continuation=wav.wav_bytes(prompt_audio, 24000)))
    assert response.status_code == 200, response.text
    expected = pipeline.generate(["calm piano"], 0.3, continuation=(prompt_audio, 24000), seeds=[4]).audio[0]
    assert (read_wav(response.content) - expected).abs().max() < 1e-5


def test_a_melody_upload_conditions_a_melody_model(tmp_path):
    export = save_tiny_export(tmp_path, "conditioner=text_and_melody", "conditioner.chroma.melody.sample_rate=24000",
                              "conditioner.chroma.melody.frame_rate=75", "conditioner.chroma.melody.n_fft=2048")
    pipeline = GenerationPipeline.load(export, generation=WINDOW)
    time = torch.arange(16000) / 16000  # 1 s at 16 kHz, stereo: resampled and mixed down by the conditioner
    tune = torch.stack([torch.sin(2 * torch.pi * 440 * time), torch.sin(2 * torch.pi * 660 * time)])  # [2, T]
    with TestClient(create_app(pipeline, LIMITS)) as client:
        assert client.get("/v1/model").json()["conditioning"] == ["text", "melody", "continuation"]
        response = client.post("/v1/generate", **multipart(GOOD, melody=wav.wav_bytes(tune, 16000)))
        assert response.status_code == 200, response.text
    melody = WavCondition(tune, 16000)
    expected = pipeline.generate(["calm piano"], 0.3, melody=melody, seeds=[4]).audio[0]
    assert (read_wav(response.content) - expected).abs().max() < 1e-5
    assert (read_wav(response.content) - solo(pipeline, "calm piano", seed=4)).abs().max() > 1e-2  # it mattered


def test_a_full_queue_is_refused_with_429_naming_the_limit(pipeline):
    limits = ServeLimits(max_duration=None, max_prompts=4, max_queue=1, max_body_bytes=10_000, max_batch=1,
                         chunk_frames=4)
    with TestClient(create_app(pipeline, limits)) as client:
        # 4 prompts need 4 places; one row and one queue place exist: the request is refused whole.
        response = client.post("/v1/generate", json={"prompts": ["a", "b", "c", "d"], "duration": 0.3})
        assert response.status_code == 429, response.text
        assert "max_queue=1" in response.json()["detail"]
        good = client.post("/v1/generate", json=GOOD)
        assert (read_wav(good.content) - solo(pipeline, "calm piano", seed=4)).abs().max() < 1e-5


def test_model_describes_the_audio_the_conditioning_and_the_limits(client, pipeline):
    model = client.get("/v1/model").json()
    assert model == {
        "sample_rate": 24000, "frame_rate": 75.0, "channels": 1, "max_duration": 2.0,
        "conditioning": ["text", "continuation"],
        "generation": {"cfg_coef": 3.0, "temperature": 1.0, "top_k": 250, "top_p": 0.0},
        "limits": {"max_duration": 2.0, "max_prompts": 4, "max_queue": 8, "max_body_bytes": 200_000,
                   "max_batch": 4, "chunk_frames": 4},
    }
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/generate", "/v1/generate/stream", "/v1/health", "/v1/model"} <= set(paths)
    content = paths["/v1/generate"]["post"]["requestBody"]["content"]
    assert content["application/json"]["schema"]["required"] == ["prompts", "duration"]
    assert set(content["multipart/form-data"]["schema"]["properties"]) == {"request", "melody", "continuation"}
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text


def test_limits_are_checked_when_the_app_is_built(pipeline):
    with pytest.raises(ValueError, match="max_batch must be >= 1, got 0"):
        ServeLimits(max_duration=None, max_prompts=1, max_queue=1, max_body_bytes=1, max_batch=0, chunk_frames=1)
    with pytest.raises(ValueError, match="max_duration must be set"):
        create_app(with_generation(pipeline, GenerationConfig()), LIMITS)


def leave_stream_after_first_audio(http: httpx.Client, request: dict) -> None:
    with http.stream("POST", "/v1/generate/stream", **request) as stream:
        received = 0
        for piece in stream.iter_raw():
            received += len(piece)
            if received > wav.HEADER_BYTES:
                return  # leaving the block closes the connection


def leave_generate_while_it_runs(http: httpx.Client, request: dict) -> None:
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        http.post("/v1/generate", **request, timeout=httpx.Timeout(60, read=1))


@pytest.mark.parametrize("leave", [leave_stream_after_first_audio, leave_generate_while_it_runs])
def test_a_client_that_leaves_does_not_stall_the_others(pipeline, leave):
    """A client asks for 10 minutes of audio and leaves early; the next request must finish (well within the
    client's timeout) and equal its solo run. The long request continues an audio prompt, so the batcher runs it
    alone (over many windows) and holds the next request until it ends: had the left request kept generating,
    the next one would wait for minutes."""
    limits = ServeLimits(max_duration=600, max_prompts=1, max_queue=4, max_body_bytes=10_000, max_batch=2,
                         chunk_frames=4)
    with running_server(create_app(pipeline, limits)) as url, httpx.Client(base_url=url, timeout=60) as http:
        leave(http, multipart({"prompts": ["long"], "duration": 600},
                              continuation=wav.wav_bytes(torch.zeros(1, 2400), 24000)))
        response = http.post("/v1/generate", json=GOOD)
        assert (read_wav(response.content) - solo(pipeline, "calm piano", seed=4)).abs().max() < 1e-5


def test_serve_yaml_builds_the_limits_and_the_generation_defaults():
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="serve", overrides=["checkpoint=x", "limits.max_batch=3", "top_k=50"])
    assert ServeLimits(**cfg.limits) == ServeLimits(max_duration=None, max_prompts=8, max_queue=32,
                                                    max_body_bytes=20_000_000, max_batch=3, chunk_frames=8)
    assert build_generation(cfg).top_k == 50
