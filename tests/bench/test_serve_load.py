"""bench/serve_load.py end to end on a random demo-sized export: it starts the server, every request is answered
with its whole clip, and its JSON line reports what it measured."""
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.stream import demo_sized_export

ROOT = Path(__file__).resolve().parents[2]


def test_serve_load_answers_every_request(tmp_path):
    export = demo_sized_export(tmp_path)
    result = subprocess.run([sys.executable, "-m", "bench.serve_load", "--checkpoint", str(export), "--requests", "3",
                             "--clients", "3", "--seconds", "0.2"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == 0 and report["lost"] == 0
    assert report["requests"] == 3 and report["throughput_ratio"] > 0
    assert 0 < report["first_audio_s"] <= report["p95_latency_s"]
