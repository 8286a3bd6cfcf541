"""Load on the HTTP server: requests from concurrent clients against the same requests sent one after another.

    python -m bench.serve_load                                    # outputs/demo/lm (make demo), 16 x 4 s, 8 clients
    python -m bench.serve_load --checkpoint RUN --requests 16 --clients 8 --seconds 4

Starts `python -m serve` on a free port of 127.0.0.1 (a separate process, so the clients do not share its
interpreter), waits for /v1/health, warms it up with one request, then streams every request from
POST /v1/generate/stream: first the requests one after another, then the same requests from `--clients` clients
that each send their share one after another. A request is answered when its stream ends with the whole clip.

JSON: throughput_ratio (concurrent / sequential requests per second: what batching buys), p50 / p95 latency and
p50 first audio (the first samples after the WAV header) of the concurrent run, the same for the sequential run,
errors (a status other than 200, or a stream cut short) and lost (sent minus answered: no status, or a 200
stream cut short). The last line is JSON.
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER_BYTES = 44  # serve/wav.py: the WAV header sent before the first samples
PROMPTS = ["calm piano", "a fast folk reel played on a violin", "church organ chorale", "brass section march",
           "soft strings", "ambient pads and a flute melody", "upbeat electronic dance music", "jazz trio with brushes"]


@dataclass
class Result:
    status: int  # 0: the connection failed
    bytes: int  # body bytes received
    latency_s: float  # request sent -> stream ended
    first_audio_s: float | None  # request sent -> first bytes past the header


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(checkpoint: str, port: int, max_batch: int, max_queue: int, chunk_frames: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "serve", f"checkpoint={checkpoint}", f"port={port}", "device=cpu",
               f"limits.max_batch={max_batch}", f"limits.max_queue={max_queue}", f"limits.chunk_frames={chunk_frames}"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until_healthy(server: subprocess.Popen, port: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v1/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer /v1/health within {timeout_s:g} s")


def get_json(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    return json.loads(connection.getresponse().read())


def stream(port: int, prompt: str, seconds: float, seed: int) -> Result:
    """POST /v1/generate/stream and read the WAV as it arrives."""
    body = json.dumps({"prompts": [prompt], "duration": seconds, "seeds": [seed]})
    start = time.perf_counter()
    first_audio, received, status = None, 0, 0
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        connection.request("POST", "/v1/generate/stream", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        status = response.status
        while data := response.read1(65536):
            received += len(data)
            if first_audio is None and received > HEADER_BYTES:
                first_audio = time.perf_counter() - start
        connection.close()
    except (OSError, http.client.HTTPException):
        status = status or 0
    return Result(status, received, time.perf_counter() - start, first_audio)


def run(port: int, requests: list[tuple[str, int]], seconds: float, clients: int) -> tuple[list[Result], float]:
    """Every request, `clients` at a time (each client sends its share in order) -> results and wall seconds."""
    shares = [requests[index::clients] for index in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        per_client = list(pool.map(lambda share: [stream(port, prompt, seconds, seed) for prompt, seed in share],
                                   shares))
    return [result for results in per_client for result in results], time.perf_counter() - start


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))], 3) if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="outputs/demo/lm", help="an LM run or export directory")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the concurrent run")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per request")
    parser.add_argument("--max-batch", type=int, default=8, help="the server's limits.max_batch")
    parser.add_argument("--chunk-frames", type=int, default=8, help="the server's limits.chunk_frames")
    args = parser.parse_args()
    checkpoint = Path(args.checkpoint) if Path(args.checkpoint).exists() else ROOT / args.checkpoint
    if not checkpoint.exists():
        raise SystemExit(f"error: checkpoint {args.checkpoint} not found (make demo writes outputs/demo/lm)")
    port = free_port()
    server = start_server(str(checkpoint.resolve()), port, args.max_batch, args.requests, args.chunk_frames)
    try:
        wait_until_healthy(server, port)
        model = get_json(port, "/v1/model")
        expected_bytes = (HEADER_BYTES + round(args.seconds * model["frame_rate"])
                          * round(model["sample_rate"] / model["frame_rate"]) * model["channels"] * 4)
        stream(port, PROMPTS[0], 0.5, seed=0)  # warm-up: first-call allocations, the text encoder
        requests = [(PROMPTS[index % len(PROMPTS)], index + 1) for index in range(args.requests)]
        sequential, sequential_s = run(port, requests, args.seconds, clients=1)
        concurrent, concurrent_s = run(port, requests, args.seconds, clients=args.clients)
    finally:
        server.terminate()
        server.wait(60)
    results = sequential + concurrent
    complete = [result.status == 200 and result.bytes == expected_bytes for result in results]
    answered = sum(ok or result.status not in (0, 200) for ok, result in zip(complete, results))  # a refusal answers
    result = {
        "checkpoint": args.checkpoint, "requests": args.requests, "clients": args.clients, "seconds": args.seconds,
        "max_batch": args.max_batch, "chunk_frames": args.chunk_frames, "threads": os.environ.get("OMP_NUM_THREADS"),
        "throughput_ratio": round(sequential_s / concurrent_s, 2),
        "sequential_requests_per_s": round(args.requests / sequential_s, 3),
        "concurrent_requests_per_s": round(args.requests / concurrent_s, 3),
        "p50_latency_s": percentile([result.latency_s for result in concurrent], 0.5),
        "p95_latency_s": percentile([result.latency_s for result in concurrent], 0.95),
        "first_audio_s": percentile([result.first_audio_s for result in concurrent if result.first_audio_s], 0.5),
        "sequential_p50_latency_s": percentile([result.latency_s for result in sequential], 0.5),
        "sequential_first_audio_s": percentile([r.first_audio_s for r in sequential if r.first_audio_s], 0.5),
        "errors": len(results) - sum(complete),
        "lost": len(results) - answered,
    }
    print(f"{args.requests} requests of {args.seconds:g} s: {result['concurrent_requests_per_s']} req/s from "
          f"{args.clients} clients vs {result['sequential_requests_per_s']} one after another "
          f"(x{result['throughput_ratio']}); p50 latency {result['p50_latency_s']} s, first audio "
          f"{result['first_audio_s']} s; {result['errors']} errors, {result['lost']} lost")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
