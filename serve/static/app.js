// The page: POST the form to /v1/generate/stream and play the WAV while it arrives (docs/serve.md, "The page").
//
// The stream is a 44-byte float32 WAV header (sizes 0xFFFFFFFF) followed by interleaved float32 frames. Each run
// of whole frames becomes an AudioBuffer scheduled right after the previous one in an AudioContext whose output is
// a MediaStreamAudioDestinationNode, set as the <audio> element's srcObject: the element is the player the user
// sees, and its currentTime advances while the audio plays. When the stream ends, the received bytes with the
// sizes filled in become the download link's WAV.
"use strict";

const HEADER_BYTES = 44;
const LEAD_SECONDS = 0.05; // scheduling margin for the first buffer
const $ = (id) => document.getElementById(id);
let player = null; // the StreamPlayer of the last request

async function loadModel() {
  const model = await (await fetch("/v1/model")).json();
  for (const name of ["cfg_coef", "temperature", "top_k", "top_p"]) $(name).value = model.generation[name];
  $("duration").max = model.max_duration;
  $("duration").value = Math.min(Number($("duration").value), model.max_duration);
  $("melody-label").hidden = !model.conditioning.includes("melody");
  $("model").textContent = `${model.sample_rate} Hz, ${model.channels} channel(s), up to ${model.max_duration} s ` +
    `per prompt; conditioning: ${model.conditioning.join(", ")}.`;
}

function requestBody() {
  const request = { prompts: [$("prompt").value.trim() || null], duration: Number($("duration").value),
                    seed: Number($("seed").value) };
  for (const name of ["cfg_coef", "temperature", "top_p"]) request[name] = Number($(name).value);
  request.top_k = Math.round(Number($("top_k").value));
  const melody = $("melody").files[0];
  if (!melody) return { headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) };
  const form = new FormData();
  form.append("request", JSON.stringify(request));
  form.append("melody", melody);
  return { body: form };
}

function parseHeader(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const text = (offset) => String.fromCharCode(...bytes.subarray(offset, offset + 4));
  if (text(0) !== "RIFF" || text(8) !== "WAVE" || text(36) !== "data" || view.getUint16(20, true) !== 3) {
    throw new Error("the server did not send a float32 WAV stream");
  }
  return { channels: view.getUint16(22, true), sampleRate: view.getUint32(24, true) };
}

// The streamed bytes as a regular WAV: RIFF size at byte 4, data size at byte 40.
function wavBlob(parts, total) {
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) { bytes.set(part, offset); offset += part.length; }
  const view = new DataView(bytes.buffer);
  view.setUint32(4, total - 8, true);
  view.setUint32(40, total - HEADER_BYTES, true);
  return new Blob([bytes], { type: "audio/wav" });
}

class StreamPlayer {
  constructor(audioElement) {
    this.context = new AudioContext();
    this.destination = this.context.createMediaStreamDestination();
    this.element = audioElement;
    this.nextStart = 0;
  }

  // frames: Float32Array of interleaved samples, a whole number of frames.
  play(frames, channels, sampleRate) {
    const length = frames.length / channels;
    const buffer = this.context.createBuffer(channels, length, sampleRate);
    for (let channel = 0; channel < channels; channel++) {
      const samples = buffer.getChannelData(channel);
      for (let index = 0; index < length; index++) samples[index] = frames[index * channels + channel];
    }
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.destination);
    if (this.nextStart === 0) { // the first audio: start the element now, so its clock starts with the sound
      this.element.srcObject = this.destination.stream;
      this.element.play();
    }
    this.nextStart = Math.max(this.nextStart, this.context.currentTime + LEAD_SECONDS);
    source.start(this.nextStart);
    this.nextStart += buffer.duration;
  }
}

async function generate(event) {
  event.preventDefault();
  $("generate").disabled = true;
  $("download").hidden = true;
  $("status").className = "";
  $("status").textContent = "Waiting for the first audio…";
  if (player !== null) player.context.close();
  player = new StreamPlayer($("player"));
  await player.context.resume();
  try {
    const response = await fetch("/v1/generate/stream", { method: "POST", ...requestBody() });
    if (!response.ok) {
      const error = await response.json();
      const detail = Array.isArray(error.detail)
        ? error.detail.map((item) => `${item.loc.slice(1).join(".")}: ${item.msg}`).join("; ") : error.detail;
      throw new Error(`${response.status}: ${detail}`);
    }
    const reader = response.body.getReader();
    const parts = [];
    let total = 0, format = null, pending = new Uint8Array(0);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      total += value.length;
      let bytes = new Uint8Array(pending.length + value.length);
      bytes.set(pending);
      bytes.set(value, pending.length);
      if (format === null) {
        if (bytes.length < HEADER_BYTES) { pending = bytes; continue; }
        format = parseHeader(bytes);
        bytes = bytes.subarray(HEADER_BYTES);
      }
      const frameBytes = 4 * format.channels;
      const whole = bytes.length - (bytes.length % frameBytes);
      if (whole > 0) {
        // slice() copies into a fresh, aligned buffer, which a Float32Array view needs.
        player.play(new Float32Array(bytes.slice(0, whole).buffer), format.channels, format.sampleRate);
        const seconds = (total - HEADER_BYTES) / frameBytes / format.sampleRate;
        $("status").textContent = `Playing while it streams: ${seconds.toFixed(1)} s received`;
      }
      pending = bytes.slice(whole);
    }
    $("download").href = URL.createObjectURL(wavBlob(parts, total));
    $("download").hidden = false;
    $("status").textContent = `Done (seed ${response.headers.get("X-Seeds")}).`;
  } catch (error) {
    $("status").className = "error";
    $("status").textContent = error.message;
  } finally {
    $("generate").disabled = false;
  }
}

$("form").addEventListener("submit", generate);
loadModel().catch((error) => { $("model").textContent = `Cannot read /v1/model: ${error.message}`; });
