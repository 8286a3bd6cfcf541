"""The TTS LM and its decode loop: cached decoding equals the full forward, right padding changes no real logit,
[EOS] stops generation, the slot constraint makes every generation parse, the length limit stops unfinished."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lm.hf_tts_lm import HFTTSLM
from lm.tts_format import SpecialToken, TTSExample, TTSFormat, TTSFormatConfig
from lm.tts_generator import TTSGenerationConfig, TTSGenerator
from lm.tts_lm import TTSLM, TTSLMConfig

FORMAT = TTSFormat(TTSFormatConfig(strides=(4, 2, 1), card=16))  # F = 7 slots per coarse frame
F = FORMAT.pattern.frame_size


def tiny_model(positional: str = "rope") -> TTSLM:
    return TTSLM(TTSLMConfig(dim=32, num_heads=4, num_layers=2, ffn_dim=64, positional=positional),
                 vocab_size=FORMAT.vocab_size).eval()


def random_sequence(frames: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    codes = [torch.randint(0, 16, (frames * count,), generator=generator) for count in FORMAT.pattern.counts]
    return FORMAT.build("hello there", codes).ids  # [L]


@pytest.mark.parametrize("positional", ["rope", "sin"])
@pytest.mark.parametrize("chunks", [[1] * 8, [13, 1, 1, 5, 3, 1]])
def test_cached_decoding_equals_the_full_forward(positional, chunks):
    model = tiny_model(positional)
    ids = torch.stack([random_sequence(3, seed) for seed in (0, 1)])[:, :sum(chunks)]  # [2, N]
    with torch.no_grad():
        full = model(ids)  # [2, N, V]
        state = model.start_decoding(batch_size=2, capacity=ids.shape[1] + 4)
        start, cached = 0, []
        for size in chunks:
            cached.append(model.decode(ids[:, start:start + size], state))
            start += size
    torch.testing.assert_close(torch.cat(cached, dim=1), full, atol=1e-5, rtol=0)
    assert state.length == ids.shape[1]


def test_right_padding_changes_no_logit_of_a_real_token():
    model = tiny_model()
    short, long = random_sequence(1, seed=0), random_sequence(3, seed=1)
    batch = FORMAT.collate([TTSExample(short, short > 0), TTSExample(long, long > 0)])
    with torch.no_grad():
        alone = model(short[None])[0]  # [L_short, V]
        padded = model(batch.ids)[0, :short.numel()]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


def test_decoding_past_the_capacity_is_refused():
    model = tiny_model()
    state = model.start_decoding(batch_size=1, capacity=4)
    model.decode(torch.zeros(1, 3, dtype=torch.long), state)
    with pytest.raises(ValueError, match="capacity 4 exceeded"):
        model.decode(torch.zeros(1, 2, dtype=torch.long), state)
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.full((1, 2), FORMAT.vocab_size))


class EndsAt(TTSLM):
    """A TTSLM that puts its mass on the ids of the slot each generated position fills (a well-trained model) and
    on [EOS] exactly at generated token `end_at`; end_at None: never on [EOS]. Decode call c predicts generated
    token c - 1 (the first call reads the prompt)."""

    def __init__(self, end_at: int | None):
        super().__init__(TTSLMConfig(dim=32, num_heads=4, num_layers=2, ffn_dim=64), vocab_size=FORMAT.vocab_size)
        self.end_at, self.calls = end_at, 0

    def start_decoding(self, batch_size: int, capacity: int):
        self.calls = 0
        return super().start_decoding(batch_size, capacity)

    def decode(self, ids: torch.Tensor, state) -> torch.Tensor:
        logits = super().decode(ids, state)  # [B, N, V]
        position = self.calls
        self.calls += 1
        low = int(FORMAT.slot_offsets[position % F])
        favoured = torch.zeros(FORMAT.vocab_size, dtype=torch.bool)
        favoured[low:low + 16] = True
        if position == self.end_at:
            favoured[:] = False
            favoured[SpecialToken.END_OF_SPEECH] = True
        return logits.masked_fill(~favoured, -1e4)


def generate(model: TTSLM, constrain: bool, max_audio_frames: int = 20, seed: int = 0):
    config = TTSGenerationConfig(temperature=1.0, top_k=0, top_p=0.0, max_audio_frames=max_audio_frames,
                                 constrain_slots=constrain)
    return TTSGenerator(model.eval(), FORMAT, config).generate("hi", generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("constrain", [True, False])
def test_end_of_speech_stops_generation_where_the_model_emits_it(constrain):
    model = EndsAt(end_at=2 * F)
    generated = generate(model, constrain)
    assert model.calls == 2 * F + 1  # no decode after [EOS]
    assert generated.finished and generated.dropped == 0
    assert [level.numel() for level in generated.codes] == [2, 4, 8]


def test_the_slot_constraint_defers_an_end_of_speech_placed_mid_frame():
    """Unconstrained, an [EOS] forced mid-frame ends there and drops the partial frame; constrained, [EOS] is not
    allowed mid-frame, the frame completes, and the model (never on [EOS] again) runs to the length limit."""
    unconstrained = generate(EndsAt(end_at=F + 3), constrain=False, max_audio_frames=4)
    assert unconstrained.finished and unconstrained.dropped == 3
    assert [level.numel() for level in unconstrained.codes] == [1, 2, 4]
    model = EndsAt(end_at=F + 3)
    constrained = generate(model, constrain=True, max_audio_frames=4)
    assert not constrained.finished and model.calls == 4 * F + 1
    assert [level.numel() for level in constrained.codes] == [4, 8, 16]


def test_constrained_generation_always_parses_and_stops_at_the_length_limit():
    """A model that never ends: the limit stops it after max_audio_frames whole frames, and every token is a code
    of its slot (generated_codes would raise otherwise)."""
    model = EndsAt(end_at=None)
    for seed in range(3):
        generated = generate(model, constrain=True, max_audio_frames=5, seed=seed)
        assert not generated.finished
        assert [level.numel() for level in generated.codes] == [5, 10, 20]
        assert generated.dropped == 1  # the token after the 5 frames, where only [EOS] could have completed them
        assert all(((level >= 0) & (level < 16)).all() for level in generated.codes)


def test_a_model_of_another_vocabulary_is_refused():
    other = TTSLM(TTSLMConfig(dim=32, num_heads=4, num_layers=1, ffn_dim=64), vocab_size=FORMAT.vocab_size + 1)
    with pytest.raises(ValueError, match="vocab_size"):
        TTSGenerator(other, FORMAT, TTSGenerationConfig())
    with pytest.raises(ValueError, match="max_audio_frames"):
        TTSGenerationConfig(max_audio_frames=0)


def tiny_llama(directory) -> LlamaForCausalLM:
    torch.manual_seed(1)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512))
    base.save_pretrained(directory)
    return base


def test_a_hugging_face_base_keeps_its_weights_and_gets_the_tts_vocabulary_appended(tmp_path):
    base = tiny_llama(tmp_path / "base")
    model = HFTTSLM.from_pretrained(tmp_path / "base", vocab_size=FORMAT.vocab_size)
    assert model.base_vocab == 50 and model.embedding.num_embeddings == 50 + FORMAT.vocab_size
    original, extended = base.state_dict(), model.base.state_dict()
    for name, value in original.items():
        assert torch.equal(extended[name][:value.shape[0]], value), name  # the embedding and head: first 50 rows
    ids = torch.stack([random_sequence(2, seed) for seed in (0, 1)])  # [2, L]
    with torch.no_grad():
        hidden = base.model(inputs_embeds=model.embedding.weight[ids + 50]).last_hidden_state  # the original body
        torch.testing.assert_close(model.eval()(ids), model.base.lm_head(hidden)[..., 50:], atol=1e-5, rtol=0)


def test_a_hugging_face_base_decodes_with_its_cache_as_its_full_forward_and_generates(tmp_path):
    tiny_llama(tmp_path / "base")
    model = HFTTSLM.from_pretrained(tmp_path / "base", vocab_size=FORMAT.vocab_size).eval()
    ids = torch.stack([random_sequence(2, seed) for seed in (0, 1)])[:, :24]
    with torch.no_grad():
        full = model(ids)
        state = model.start_decoding(batch_size=2, capacity=24)
        cached = torch.cat([model.decode(ids[:, :13], state)] + [model.decode(ids[:, i:i + 1], state)
                                                                 for i in range(13, 24)], dim=1)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
    generated = TTSGenerator(model, FORMAT, TTSGenerationConfig(max_audio_frames=3)).generate(
        "hi", generator=torch.Generator().manual_seed(0))
    assert generated.dropped == (0 if generated.finished else 1)
    assert all(((level >= 0) & (level < 16)).all() for level in generated.codes)
