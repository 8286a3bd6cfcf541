"""The web page in a real browser: Playwright drives Debian's headless Chromium against a uvicorn server with a tiny
model. Typing a prompt and pressing Generate must start the audio element playing (its currentTime advances)
while the stream is still arriving, and the download link must then hold the same WAV as /v1/generate."""
import base64
import shutil
from pathlib import Path

import httpx
import pytest

from pipeline import GenerationPipeline
from serve.app import create_app
from serve.config import ServeLimits
from tests.serve.conftest import running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the `playwright` package")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file() or shutil.which("chromium") is None,
                                reason=f"{CHROMIUM} missing: apt-get install chromium (make install does)")

DOWNLOAD_AS_BASE64 = """async (link) => {
    const bytes = new Uint8Array(await (await fetch(link.href)).arrayBuffer());
    let text = "";
    for (let index = 0; index < bytes.length; index += 8192) {
        text += String.fromCharCode(...bytes.subarray(index, index + 8192));
    }
    return btoa(text);
}"""


def test_the_page_plays_the_audio_while_it_streams_then_offers_the_wav(serve_export):
    # 4 s of audio in chunks of 2 frames (27 ms): seconds of real generation on this CPU, audio from the first.
    limits = ServeLimits(max_duration=4, max_prompts=1, max_queue=2, max_body_bytes=100_000, max_batch=1,
                         chunk_frames=2)
    app = create_app(GenerationPipeline.load(serve_export), limits)
    with running_server(app) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            finished, errors = [], []
            page.on("requestfinished", lambda request: finished.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            page.wait_for_function("document.getElementById('model').textContent.includes('Hz')")
            page.fill("#prompt", "a slow chorale on church organ")
            page.fill("#duration", "4")
            page.click("#generate")
            while page.evaluate("document.getElementById('player').currentTime") < 0.1:
                assert f"{url}/v1/generate/stream" not in finished, "the stream ended before the audio played"
                page.wait_for_timeout(20)
            assert f"{url}/v1/generate/stream" not in finished, "the stream ended before the audio played"

            link = page.wait_for_selector("#download:not([hidden])", timeout=120_000)
            downloaded = base64.b64decode(link.evaluate(DOWNLOAD_AS_BASE64))
            assert errors == []
        finally:
            browser.close()
        request = {"prompts": ["a slow chorale on church organ"], "duration": 4, "seed": 0, "cfg_coef": 3,
                   "temperature": 1, "top_k": 250, "top_p": 0}  # what the page sends with the model's defaults
        whole = httpx.post(f"{url}/v1/generate", json=request, timeout=120)
    assert whole.status_code == 200
    assert downloaded == whole.content
