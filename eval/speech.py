"""Speech evaluation: is generated speech intelligible, in the requested voice, and as long as its text needs?

    python -m eval.speech generated=outputs/tts/samples            # a folder of WAVs + transcripts.jsonl
    python -m eval.speech                                          # the real ceiling rows only

Input. `generated` is a folder holding WAVs and a listing, `transcripts.jsonl` (the `listing` key), one JSON object
per line and per clip:

    {"audio": "000.wav", "text": "the old cat slept.", "speaker": "en-gb+f4"}

`audio` is relative to the folder; `text` is what the clip should say (normalised with
data.speech_text.normalize_text, which refuses characters outside the speech character set); the requested voice is
`speaker` (a voice+variant of the training split, as in a sidecar) and/or `accent` and `person` (as in a sidecar:
"Scottish", "woman"); those two follow from `speaker` when it is given, and any of them may be left out or null
(that clip is then not scored on it). A listing that is missing or malformed, a listed WAV that is missing or
unreadable, and a voice the probes never heard are errors naming the file, line or value; WAVs in the folder that
the listing does not name are counted (`unlisted`) and not scored.

Metrics, per clip, with models trained on `train_manifest` (cached in cache_dir, keyed by the clips, their
transcripts and the config; with `probe_audio=codec` the voice probes learn from those clips after a round trip
through `codec_dir`, the audio a TTS LM over that codec speaks in, and the recogniser still from the real clips):
- intelligibility: the CTC recogniser's greedy transcript (eval.ctc) against the text: the row's CER (character
  edits over reference characters, all clips pooled) and the share of clips at CER <= `intelligible_cer`;
- voice: three probes (eval.instrument's log-mel statistics -> MLP, one per label) name the speaker, the accent and
  the person (man / woman); a rate is the share of clips whose requested value is named;
- duration: seconds per character (the clip's length over its text's characters) against real speech: the row's
  pooled seconds per character over that of every real test clip (1 = as fast as the training voices, on average
  over their rates), and the correlation of duration with text length over the row's clips.
Rates come with n and their Wilson interval at `confidence` (eval.stats).

Rows: `generated` when given, and always the real test split as the ceiling, in two rows: `real, known speakers`
(unseen sentences by the training speakers: the recogniser's and probes' held-out accuracy) and `real, held-out
speakers` (the same sentences by speakers and accents never heard in training: only CER, person and duration
apply). With `codec_dir=DIR` (a saved codec, codec.loading.load_codec), a third real row, `codec round trip`: the
known speakers' clips encoded and decoded by that codec, the ceiling of any LM speaking through it. Writes
out_dir/speech.md (the table) and out_dir/speech.json (parameters, rows, every clip). Bad input is one line on
stderr and exit 1.
"""
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch import Tensor

from builders import plain
from codec.codec import Codec
from codec.loading import load_codec
from codec.snac import SNACCodec
from data.audio import AudioReadError, convert_audio, read_audio
from data.manifest import read_manifest, read_sidecar
from data.speech_text import normalize_text
from eval.ctc import (CTCRecognizer, RecognizerConfig, cer, edit_distance, fingerprint, load_cached_recognizer,
                      save_recognizer, train_recognizer)
from eval.instrument import (InstrumentClassifier, InstrumentConfig, LogMelStatistics, load_cached_classifier,
                             save_classifier, train_classifier)
from eval.instrument import fingerprint as probe_fingerprint
from eval.round_trip import codec_round_trip, weights_digest
from eval.stats import Rate, rate_of

VOICE_FIELDS = ("speaker", "accent", "person")  # what a probe names, as sidecar fields
REAL_KNOWN, REAL_HELD_OUT, GENERATED = "real, known speakers", "real, held-out speakers", "generated"
CODEC_ROUND_TRIP = "codec round trip"
PROBE_AUDIO = ("real", "codec")  # what the voice probes learn from: the training clips, or their codec round trips
RECOGNIZER_FILE = "ctc_recognizer.pt"


@dataclass
class Clip:
    """One clip to score: its audio, what it should say and in which voice (None: not requested)."""
    source: str  # the audio file name (generated) or "test/<name>" (real)
    path: str
    text: str
    speaker: str | None
    accent: str | None
    person: str | None


@dataclass
class Score:
    source: str
    text: str
    transcript: str
    cer: float
    seconds: float
    requested: dict  # field -> requested value (None: not requested)
    named: dict  # field -> what the probe names


def read_mono(path: str, sample_rate: int) -> Tensor:
    """The file as mono [T] at sample_rate."""
    wav, source_rate = read_audio(path)
    return convert_audio(wav, source_rate, sample_rate, channels=1)[0]


def training_clips(train_manifest: str) -> tuple[list[str], list[dict]]:
    """Audio paths and sidecars of the training split; every sidecar must hold a transcript and a voice."""
    paths, sidecars = [], []
    for entry in read_manifest(train_manifest):
        sidecar = read_sidecar(entry.path)
        missing = [field for field in ("text",) + VOICE_FIELDS if not sidecar.get(field)]
        if missing:
            raise ValueError(f"train_manifest clip {entry.path} has no {', '.join(missing)} in its sidecar: "
                             "is it a speech build (python -m data.build_speech)?")
        paths.append(entry.path)
        sidecars.append(sidecar)
    return paths, sidecars


def voice_table(sidecars: list[dict]) -> dict[str, tuple[str, str]]:
    """speaker -> (accent, person), as the training sidecars say."""
    return {sidecar["speaker"]: (sidecar["accent"], sidecar["person"]) for sidecar in sidecars}


def read_listing(folder: Path, listing: str, voices: dict[str, tuple[str, str]]) -> tuple[list[Clip], int]:
    """The clips a generated folder's listing names, and how many WAVs in the folder it leaves out."""
    listing_path = folder / listing
    if not listing_path.is_file():
        raise FileNotFoundError(f"generated folder {folder} has no listing {listing} (one JSON object per clip: "
                                '{"audio": "000.wav", "text": "...", "speaker": "en-gb+f4"})')
    accents = {accent for accent, _ in voices.values()}
    persons = {person for _, person in voices.values()}
    clips = []
    for number, line in enumerate(listing_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{listing_path} line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not JSON: {error}") from error
        if not isinstance(item, dict) or not all(isinstance(item.get(key), str) for key in ("audio", "text")):
            raise ValueError(f"{where} must be an object with string fields audio and text, got {line!r}")
        path = folder / item["audio"]
        if not path.is_file():
            raise FileNotFoundError(f"{where} lists audio {item['audio']}, which {folder} does not hold")
        speaker, accent, person = (item.get(field) for field in VOICE_FIELDS)
        if speaker is not None:
            if speaker not in voices:
                raise ValueError(f"{where}: unknown speaker {speaker!r}; the probes know {sorted(voices)}")
            accent, person = accent or voices[speaker][0], person or voices[speaker][1]
        if accent is not None and accent not in accents:
            raise ValueError(f"{where}: unknown accent {accent!r}; the probes know {sorted(accents)}")
        if person is not None and person not in persons:
            raise ValueError(f"{where}: unknown person {person!r}; the probes know {sorted(persons)}")
        try:
            text = normalize_text(item["text"])
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
        clips.append(Clip(source=item["audio"], path=str(path), text=text, speaker=speaker, accent=accent,
                          person=person))
    if not clips:
        raise ValueError(f"listing {listing_path} names no clips")
    listed = {Path(clip.path).resolve() for clip in clips}
    unlisted = sum(1 for wav in folder.rglob("*.wav") if wav.resolve() not in listed)
    return clips, unlisted


def real_clips(test_manifest: str, voices: dict[str, tuple[str, str]]) -> dict[str, list[Clip]]:
    """The test split's clips in the two ceiling rows; a voice field the probes never heard is not requested."""
    rows = {REAL_KNOWN: [], REAL_HELD_OUT: []}
    accents = {accent for accent, _ in voices.values()}
    for entry in read_manifest(test_manifest):
        sidecar = read_sidecar(entry.path)
        if not sidecar.get("text"):
            raise ValueError(f"test_manifest clip {entry.path} has no text in its sidecar")
        row = REAL_HELD_OUT if sidecar.get("held_out_speaker") else REAL_KNOWN
        rows[row].append(Clip(source=f"test/{Path(entry.path).name}", path=entry.path, text=sidecar["text"],
                              speaker=sidecar.get("speaker") if sidecar.get("speaker") in voices else None,
                              accent=sidecar.get("accent") if sidecar.get("accent") in accents else None,
                              person=sidecar.get("person")))
    if not rows[REAL_KNOWN] and not rows[REAL_HELD_OUT]:
        raise ValueError(f"test_manifest {test_manifest} lists no clips")
    return {name: clips for name, clips in rows.items() if clips}


def recognizer_for(cfg: DictConfig, paths: list[str], sidecars: list[dict], cache_dir: Path) -> CTCRecognizer:
    """The recogniser cached in cache_dir, or one trained now on the training clips."""
    config = RecognizerConfig(**plain(cfg.recognizer))
    key = fingerprint(config, cfg.sample_rate, [f"{Path(path).resolve()}\t{sidecar['text']}"
                                                for path, sidecar in sorted(zip(paths, sidecars))])
    cached = load_cached_recognizer(cache_dir / RECOGNIZER_FILE, key, config, cfg.sample_rate)
    if cached is not None:
        return cached
    start = time.time()
    trained = train_recognizer([read_mono(path, cfg.sample_rate) for path in paths],
                               [sidecar["text"] for sidecar in sidecars], config, cfg.sample_rate)
    print(f"trained the recogniser on {len(paths)} clips in {time.time() - start:.0f} s "
          f"(final loss {trained.losses[-1]:.3f})", flush=True)
    save_recognizer(trained.recognizer, cache_dir / RECOGNIZER_FILE, key)
    return trained.recognizer


def probes_for(cfg: DictConfig, paths: list[str], sidecars: list[dict], cache_dir: Path,
               features: LogMelStatistics, codec: Codec | SNACCodec | None) -> dict[str, InstrumentClassifier]:
    """field -> the probe naming it, cached in cache_dir or trained now on the training clips' features (after a
    round trip through `codec`, seeded with codec_seed, when probe_audio=codec)."""
    config = InstrumentConfig(**plain(cfg.voice))
    probes, clip_features = {}, None
    for field in VOICE_FIELDS:
        sources = [f"{Path(path).resolve()}\t{sidecar[field]}" for path, sidecar in sorted(zip(paths, sidecars))]
        if cfg.probe_audio == "codec":  # the weights too: a codec retrained into the same directory is another one
            sources.append(f"codec round trip: {Path(cfg.codec_dir).resolve()}, weights sha256 "
                           f"{weights_digest(codec)}, seed {cfg.codec_seed}")
        key = probe_fingerprint(config, cfg.sample_rate, 0.0, sources)
        probes[field] = load_cached_classifier(cache_dir / f"{field}_probe.pt", key, config)
        if probes[field] is None:
            if clip_features is None:
                clip_features = clip_statistics(probe_training_audio(cfg, paths, codec), features)
            probes[field] = train_classifier(clip_features, [sidecar[field] for sidecar in sidecars], config)
            save_classifier(probes[field], cache_dir / f"{field}_probe.pt", key)
    return probes


def probe_training_audio(cfg: DictConfig, paths: list[str], codec: Codec | SNACCodec | None) -> list[Tensor]:
    """The training clips as the probes hear them: mono [T_b] at cfg.sample_rate, round-tripped through `codec`
    when probe_audio=codec (one clip at a time: docs/speech_eval.md measures the cost)."""
    wavs = [read_mono(path, cfg.sample_rate) for path in paths]
    if cfg.probe_audio == "real":
        return wavs
    start = time.time()
    torch.manual_seed(cfg.codec_seed)  # a SNAC decoder's noise blocks draw from torch's generator
    wavs = [codec_round_trip(codec, wav, cfg.sample_rate) for wav in wavs]
    print(f"round-tripped {len(wavs)} training clips through {cfg.codec_dir} in {time.time() - start:.0f} s",
          flush=True)
    return wavs


def clip_statistics(wavs: list[Tensor], features: LogMelStatistics) -> Tensor:
    """Mono clips [T_b] of any lengths -> features [N, 2M] (pooled over each whole clip)."""
    with torch.no_grad():
        return torch.cat([features(wav[None]) for wav in wavs])


def score(clips: list[Clip], wavs: list[Tensor], cfg: DictConfig, recognizer: CTCRecognizer,
          probes: dict[str, InstrumentClassifier], features: LogMelStatistics) -> list[Score]:
    """Each clip scored on its audio, `wavs` (mono [T_b] at cfg.sample_rate)."""
    transcripts = recognizer.transcribe(wavs)
    statistics = clip_statistics(wavs, features)  # [N, 2M]
    named = {field: probe.predict(statistics) for field, probe in probes.items()}
    return [Score(source=clip.source, text=clip.text, transcript=transcript, cer=cer(transcript, clip.text),
                  seconds=len(wav) / cfg.sample_rate, requested={field: getattr(clip, field) for field in VOICE_FIELDS},
                  named={field: named[field][index] for field in VOICE_FIELDS})
            for index, (clip, wav, transcript) in enumerate(zip(clips, wavs, transcripts))]


def correlation(first: list[float], second: list[float]) -> float | None:
    """Pearson's correlation; None with fewer than 3 pairs or no spread."""
    if len(first) < 3:
        return None
    mean_first, mean_second = sum(first) / len(first), sum(second) / len(second)
    covariance = sum((a - mean_first) * (b - mean_second) for a, b in zip(first, second))
    spread = math.sqrt(sum((a - mean_first) ** 2 for a in first) * sum((b - mean_second) ** 2 for b in second))
    return None if spread == 0 else covariance / spread


def seconds_per_character(scores: list[Score]) -> float:
    return sum(s.seconds for s in scores) / sum(len(s.text) for s in scores)


def summarise(scores: list[Score], real_seconds_per_character: float, cfg: DictConfig) -> dict:
    """One row: clip count, pooled CER, the rates with Wilson intervals, and the duration figures."""
    edits = sum(edit_distance(s.transcript, s.text) for s in scores)
    return {
        "clips": len(scores),
        "cer": edits / sum(len(s.text) for s in scores),
        "intelligible": rate_of([s.cer <= cfg.intelligible_cer for s in scores], cfg.confidence),
        **{field: rate_of([s.named[field] == s.requested[field] for s in scores if s.requested[field] is not None],
                          cfg.confidence) for field in VOICE_FIELDS},
        "seconds_per_character": seconds_per_character(scores),
        "duration_ratio": seconds_per_character(scores) / real_seconds_per_character,
        "duration_text_correlation": correlation([s.seconds for s in scores], [float(len(s.text)) for s in scores]),
    }


def _rate_cell(rate: Rate | None) -> str:
    return "n/a" if rate is None else f"{rate.rate:.2f} [{rate.low:.2f}, {rate.high:.2f}] n={rate.n}"


def _number_cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(rows: dict[str, dict], intelligible_cer: float) -> str:
    lines = [f"| row | clips | CER | CER <= {intelligible_cer:g} | speaker | accent | person | s / char | "
             "duration ratio | corr(duration, chars) |", "|---" * 10 + "|"]
    for name, row in rows.items():
        cells = [name, str(row["clips"]), _number_cell(row["cer"]), _rate_cell(row["intelligible"]),
                 *(_rate_cell(row[field]) for field in VOICE_FIELDS), _number_cell(row["seconds_per_character"]),
                 _number_cell(row["duration_ratio"]), _number_cell(row["duration_text_correlation"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check_request(cfg: DictConfig) -> None:
    """Refuse what cannot run, naming the keys, before anything is loaded or written."""
    if cfg.probe_audio not in PROBE_AUDIO:
        raise ValueError(f"probe_audio must be one of {list(PROBE_AUDIO)}, got {cfg.probe_audio!r}")
    if cfg.probe_audio == "codec" and cfg.codec_dir is None:
        raise ValueError("probe_audio=codec needs codec_dir: the saved codec whose round trips the probes learn from")


def evaluate(cfg: DictConfig) -> Path:
    """Trains or loads the recogniser and probes, scores the rows and writes the report. Returns out_dir."""
    check_request(cfg)
    paths, sidecars = training_clips(cfg.train_manifest)
    voices = voice_table(sidecars)
    generated, unlisted = (None, 0) if cfg.generated is None else read_listing(Path(cfg.generated), cfg.listing,
                                                                                voices)
    clips = real_clips(cfg.test_manifest, voices)
    codec = None if cfg.codec_dir is None else load_codec(cfg.codec_dir)
    out_dir, cache_dir = Path(cfg.out_dir), Path(cfg.cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    features = LogMelStatistics(InstrumentConfig(**plain(cfg.voice)), cfg.sample_rate)
    recognizer = recognizer_for(cfg, paths, sidecars, cache_dir)
    probes = probes_for(cfg, paths, sidecars, cache_dir, features, codec)

    wavs = {name: [read_mono(clip.path, cfg.sample_rate) for clip in row_clips] for name, row_clips in clips.items()}
    if codec is not None and REAL_KNOWN in clips:
        torch.manual_seed(cfg.codec_seed)  # a SNAC decoder's noise blocks draw from torch's generator
        clips[CODEC_ROUND_TRIP] = clips[REAL_KNOWN]
        wavs[CODEC_ROUND_TRIP] = [codec_round_trip(codec, wav, cfg.sample_rate) for wav in wavs[REAL_KNOWN]]
    if generated is not None:
        clips[GENERATED] = generated
        wavs[GENERATED] = [read_mono(clip.path, cfg.sample_rate) for clip in generated]
    scores = {name: score(row_clips, wavs[name], cfg, recognizer, probes, features)
              for name, row_clips in clips.items()}
    real_rate = seconds_per_character(scores.get(REAL_KNOWN, []) + scores.get(REAL_HELD_OUT, []))
    rows = {name: summarise(row_scores, real_rate, cfg) for name, row_scores in scores.items()}
    text = (f"Speech evaluation{'' if cfg.generated is None else ' of ' + str(cfg.generated)}: recogniser and voice "
            f"probes trained on {len(paths)} clips of {cfg.train_manifest}"
            + ("" if cfg.probe_audio == "real" else f" (the probes on their round trips through {cfg.codec_dir})")
            + f"; real rows: {cfg.test_manifest}"
            + ("" if cfg.codec_dir is None
               else f" ({CODEC_ROUND_TRIP}: the known speakers' clips through {cfg.codec_dir})")
            + ". CER: "
            f"character edits over reference characters, all clips of a row pooled. Rates: value "
            f"[{cfg.confidence:.0%} Wilson interval] n = the clips requesting that field. Duration ratio: the row's "
            f"seconds per character over that of all real test clips ({real_rate:.4f})."
            + ("" if generated is None else f" WAVs in the folder not in its listing: {unlisted}.")
            + "\n\n" + markdown_table(rows, cfg.intelligible_cer))
    (out_dir / "speech.md").write_text(text)
    report = {"parameters": plain(cfg), "unlisted": unlisted, "voices": {field: probe.labels for field, probe in
                                                                         probes.items()},
              "rows": rows, "clips": {name: [asdict(s) for s in row_scores] for name, row_scores in scores.items()}}
    (out_dir / "speech.json").write_text(json.dumps(report, indent=2, default=asdict))  # asdict: Rate
    print(text)
    return out_dir


@hydra.main(config_path="../configs", config_name="speech_eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        out_dir = evaluate(cfg)
    except (ValueError, FileNotFoundError, AudioReadError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
