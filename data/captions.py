"""Text captions from per-file metadata (AudioCraft sidecar fields), with per-field dropout for training.

Either the human `description` is used, or a sentence is built from the categorical fields, e.g.
    {"genre": "folk", "instrument": "violin", "moods": ["lively"], "key": "G major", "bpm": 120}
    -> "A lively folk piece played on violin in G major at 120 bpm."
Each field is dropped with its own probability, so the LM learns to follow partial prompts.
"""
import random
from dataclasses import dataclass, field

CAPTION_FIELDS = ("moods", "genre", "instrument", "key", "bpm")


@dataclass
class CaptionConfig:
    description_prob: float = 0.5  # chance of using `description` (when present) instead of a built sentence
    field_dropout: dict[str, float] = field(default_factory=dict)  # field -> chance of leaving it out

    def __post_init__(self):
        if not 0 <= self.description_prob <= 1:
            raise ValueError(f"description_prob must be in [0, 1], got {self.description_prob}")
        for name, probability in self.field_dropout.items():
            if name not in CAPTION_FIELDS:
                raise ValueError(f"field_dropout keys must be in {CAPTION_FIELDS}, got {name!r}")
            if not 0 <= probability <= 1:
                raise ValueError(f"field_dropout[{name!r}] must be in [0, 1], got {probability}")


def as_words(value) -> str | None:
    """A metadata value as text: lists are joined with commas; None, '' and 'None' mean absent."""
    if isinstance(value, (list, tuple)):
        words = [str(item).strip() for item in value if str(item).strip()]
        return ", ".join(words) or None
    if value is None or str(value).strip() in ("", "None"):
        return None
    return str(value).strip()


def _format_bpm(value) -> str | None:
    try:
        return f"{float(value):g} bpm"
    except (TypeError, ValueError):
        return None


def build_sentence(fields: dict[str, str | None]) -> str:
    """A caption sentence from already-selected field texts (missing ones are omitted)."""
    noun = f"{fields['genre']} piece" if fields.get("genre") else "piece"
    words = [fields["moods"]] if fields.get("moods") else []
    words.append(noun)
    if fields.get("instrument"):
        words.append(f"played on {fields['instrument']}")
    if fields.get("key"):
        words.append(f"in {fields['key']}")
    if fields.get("bpm"):
        words.append(f"at {fields['bpm']}")
    if len(words) == 1 and noun == "piece":
        return ""
    sentence = " ".join(words)
    article = "An" if sentence[0].lower() in "aeiou" else "A"
    return f"{article} {sentence}."


def make_caption(metadata: dict, config: CaptionConfig, rng: random.Random) -> str:
    """Caption for one item; '' when every field was dropped or none exists (the unconditional prompt)."""
    description = as_words(metadata.get("description"))
    if description is not None and rng.random() < config.description_prob:
        return description
    texts = {}
    for name in CAPTION_FIELDS:
        keep = rng.random() >= config.field_dropout.get(name, 0.0)
        text = _format_bpm(metadata.get(name)) if name == "bpm" else as_words(metadata.get(name))
        texts[name] = text if keep else None
    return build_sentence(texts)
