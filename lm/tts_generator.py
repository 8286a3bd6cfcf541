"""The TTS decode loop: a text's prompt -> sampled audio tokens until [EOS] or the length limit -> codes per level.

Slot constraint (`constrain_slots`): `TTSFormat` knows which slot of the coarse frame every audio position fills, so
each step samples only among the ids of that slot's block (and [EOS], allowed only where a coarse frame would
start and after at least one frame). Every generation is then parseable: no text or special token inside the
audio, no code in another slot's block, no frame cut short by [EOS]. Without it the model samples over the whole
vocabulary and `TTSFormat.generated_codes` refuses a token out of place.
"""
from dataclasses import dataclass

import torch

from lm.sampling import check_sampling, sample
from lm.hf_tts_lm import HFTTSLM
from lm.tts_format import GeneratedAudio, SpecialToken, TTSFormat
from lm.tts_lm import TTSLM


@dataclass
class TTSGenerationConfig:
    """configs/tts/*.yaml `generation:`."""

    temperature: float = 1.0  # 0 = greedy
    top_k: int = 50  # 0 = off
    top_p: float = 0.0  # 0 = off
    max_audio_frames: int = 512  # coarse frames generated at most (F tokens each); then stop unfinished
    constrain_slots: bool = True  # sample each audio position among its slot's ids only (see the module docstring)

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.max_audio_frames < 1:
            raise ValueError(f"max_audio_frames must be >= 1, got {self.max_audio_frames}")


class TTSGenerator:
    """The decode loop around a `TTSLM` (or an `HFTTSLM`, the same interface) for one `TTSFormat`."""

    def __init__(self, model: TTSLM | HFTTSLM, tts_format: TTSFormat, config: TTSGenerationConfig):
        if model.vocab_size != tts_format.vocab_size:
            raise ValueError(f"the model's vocab_size {model.vocab_size} differs from the format's "
                             f"{tts_format.vocab_size}")
        if config.top_k > tts_format.vocab_size:
            raise ValueError(f"top_k must be in [0, vocab_size={tts_format.vocab_size}], got {config.top_k}")
        self.model, self.format, self.config = model, tts_format, config
        card = tts_format.config.card
        ids = torch.arange(tts_format.vocab_size)  # [V]
        offsets = tts_format.slot_offsets[:, None]  # [F, 1]
        allowed = (ids >= offsets) & (ids < offsets + card)  # [F, V]: slot s's block
        allowed[0, SpecialToken.END_OF_SPEECH] = True  # [EOS] only where a new coarse frame would start
        self.allowed = allowed
        self.allowed_first = allowed[0].clone()
        self.allowed_first[SpecialToken.END_OF_SPEECH] = False  # at least one frame before [EOS]

    @torch.no_grad()  # not inference_mode: the codes it returns feed a codec decode that may track gradients
    def generate(self, text: str, generator: torch.Generator | None = None, speaker: str | None = None
                 ) -> GeneratedAudio:
        """text -> the codes of the speech the model samples for it (one utterance; `generator` seeds the noise),
        in the voice `speaker` of the format's speakers (None: the model picks one)."""
        config, F = self.config, self.format.pattern.frame_size
        device = self.model.embedding.weight.device
        prompt = self.format.prompt(text, speaker).to(device)[None]  # [1, P]
        max_tokens = config.max_audio_frames * F + 1  # the frames and their [EOS]
        allowed, allowed_first = self.allowed.to(device), self.allowed_first.to(device)
        state = self.model.start_decoding(1, prompt.shape[1] + max_tokens)
        logits = self.model.decode(prompt, state)[:, -1]  # [1, V]
        tokens = []
        for position in range(max_tokens):
            if config.constrain_slots:
                logits = logits.masked_fill(~(allowed_first if position == 0 else allowed[position % F]), float("-inf"))
            token = sample(logits, config.temperature, config.top_k, config.top_p, generator=generator)  # [1]
            tokens.append(token)
            if int(token) == SpecialToken.END_OF_SPEECH or position + 1 == max_tokens:
                break
            logits = self.model.decode(token[:, None], state)[:, -1]
        return self.format.generated_codes(torch.cat(tokens).cpu())
