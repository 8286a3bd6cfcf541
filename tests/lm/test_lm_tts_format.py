import pytest
import torch

from lm.tts_format import SpecialToken, TTSFormat, TTSFormatConfig

SOH, EOT, EOH, SOS, EOS, PAD = (SpecialToken.START_OF_HUMAN, SpecialToken.END_OF_TEXT, SpecialToken.END_OF_HUMAN,
                                SpecialToken.START_OF_SPEECH, SpecialToken.END_OF_SPEECH, SpecialToken.PAD)
CONFIGS = [TTSFormatConfig(card=32), TTSFormatConfig(card=32, audio_offsets="level"),
           TTSFormatConfig(strides=(8, 4, 2, 1), card=16, order="level_major"), TTSFormatConfig(strides=(1,), card=8)]


def random_codes(config: TTSFormatConfig, frames: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, config.card, (frames * (config.strides[0] // stride),), generator=generator)
            for stride in config.strides]


def test_build_lays_out_a_small_example_by_hand():
    config = TTSFormatConfig(strides=(2, 1), card=4, characters=" abhi")
    tts = TTSFormat(config)
    assert (tts.text_start, tts.audio_start, tts.vocab_size) == (6, 11, 11 + 3 * 4)  # F = 3 slots of 4 codes
    h, i = 6 + 3, 6 + 4
    codes = [torch.tensor([1, 2]), torch.tensor([3, 0, 2, 1])]  # frames (c0, f0, f1) = (1, 3, 0), (2, 2, 1)
    example = tts.build("Hi", codes)
    audio = [11 + 1, 15 + 3, 19 + 0, 11 + 2, 15 + 2, 19 + 1]  # slot s of a frame lives in [11 + 4 s, 15 + 4 s)
    assert example.ids.tolist() == [SOH, h, i, EOT, EOH, SOS, *audio, EOS]
    assert example.loss_mask.tolist() == [False] * 6 + [True] * 7


def test_slot_offsets_are_orpheus_offsets():
    """Audio ids minus the block start equal Orpheus's code + 4096 * (index % 7) for SNAC 24 kHz codes."""
    tts = TTSFormat(TTSFormatConfig())
    codes = random_codes(tts.config, frames=5)
    coarse, middle, fine = codes
    orpheus = []
    for i in range(5):
        frame = [coarse[i], middle[2 * i], fine[4 * i], fine[4 * i + 1], middle[2 * i + 1], fine[4 * i + 2],
                 fine[4 * i + 3]]
        orpheus += [int(code) + 4096 * slot for slot, code in enumerate(frame)]
    assert (tts.encode_audio(codes) - tts.audio_start).tolist() == orpheus


@pytest.mark.parametrize("config", CONFIGS, ids=lambda config: f"{config.strides}-{config.audio_offsets}")
def test_every_special_token_where_the_format_says(config):
    tts = TTSFormat(config)
    example = tts.build("  Hello,   World! ", random_codes(config, frames=3))
    ids = example.ids.tolist()
    text_length, audio_length = len("hello, world!"), 3 * tts.pattern.frame_size
    assert len(ids) == text_length + audio_length + 5
    assert ids[0] == SOH and ids[text_length + 1: text_length + 4] == [EOT, EOH, SOS] and ids[-1] == EOS
    specials = [position for position, token in enumerate(ids) if token < tts.text_start]
    assert specials == [0, text_length + 1, text_length + 2, text_length + 3, len(ids) - 1]


@pytest.mark.parametrize("loss_on_end,loss_on_text", [(True, False), (False, False), (True, True)])
def test_loss_mask_covers_exactly_the_audio_span(loss_on_end, loss_on_text):
    config = TTSFormatConfig(card=32, loss_on_end_of_speech=loss_on_end, loss_on_text=loss_on_text)
    tts = TTSFormat(config)
    example = tts.build("a short one.", random_codes(config, frames=2))
    ids, mask = example.ids, example.loss_mask
    is_audio = ids >= tts.audio_start
    is_text = (ids >= tts.text_start) & (ids < tts.audio_start)
    expected = is_audio | (loss_on_end & (ids == EOS)) | (loss_on_text & (is_text | (ids == EOT)))
    assert torch.equal(mask, expected)
    assert mask[is_audio].all() and int(mask.sum()) == 14 + loss_on_end + loss_on_text * 13


@pytest.mark.parametrize("config", CONFIGS, ids=lambda config: f"{config.strides}-{config.audio_offsets}")
def test_parse_inverts_build(config):
    tts = TTSFormat(config)
    for seed, (text, frames) in enumerate([("One.", 1), ("Two words?", 4), ("it's 42: ok; fine - \"yes\"!", 9)]):
        codes = random_codes(config, frames, seed)
        parsed = tts.parse(tts.build(text, codes).ids)
        assert parsed.text == tts.normalize(text)
        assert all(torch.equal(back, level) for back, level in zip(parsed.codes, codes))


def test_collate_pads_and_masks():
    config = TTSFormatConfig(card=32)
    tts = TTSFormat(config)
    examples = [tts.build("hi", random_codes(config, 1)), tts.build("a longer sentence", random_codes(config, 3, 1))]
    batch = tts.collate(examples)
    lengths = [example.ids.numel() for example in examples]
    assert batch.ids.shape == (2, max(lengths))
    for row, (example, length) in enumerate(zip(examples, lengths)):
        assert batch.attention_mask[row].tolist() == [True] * length + [False] * (max(lengths) - length)
        assert torch.equal(batch.ids[row, :length], example.ids) and (batch.ids[row, length:] == PAD).all()
        assert torch.equal(batch.loss_mask[row, :length], example.loss_mask) and not batch.loss_mask[row, length:].any()
        assert tts.parse(batch.ids[row]).text == tts.parse(example.ids).text


@pytest.mark.parametrize("text", ["", "   ", "\t\n "])
def test_empty_text_refused_naming_text(text):
    tts = TTSFormat(TTSFormatConfig(card=8))
    with pytest.raises(ValueError, match="^text must"):
        tts.build(text, random_codes(tts.config, 1))
    with pytest.raises(ValueError, match="^text must"):
        tts.prompt(text)


def test_out_of_set_characters_normalised_or_refused_by_name():
    tts = TTSFormat(TTSFormatConfig(card=8))
    assert tts.normalize("Caf\u00e9 \u2014 \u201cNa\u00efve\u201d\u2019s\n\tTEST\u2026") == 'cafe - "naive"\'s test...'
    with pytest.raises(ValueError, match=r"^text has '€' \(U\+20AC\) at position 4"):
        tts.normalize("cost€5")
    with pytest.raises(ValueError, match=r"^text has ' ' \(U\+0020\) at position 1"):
        TTSFormat(TTSFormatConfig(card=8, characters="ab")).normalize("a ba")  # space is outside "ab"
    with pytest.raises(ValueError, match="characters"):
        TTSFormat(TTSFormatConfig(characters="aA"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda config: f"{config.strides}-{config.audio_offsets}")
def test_token_id_ranges_do_not_overlap(config):
    tts = TTSFormat(config)
    specials = set(int(token) for token in SpecialToken)
    text = set(tts.encode_text(tts.config.characters.strip()).tolist()) | set(tts.encode_text("a b").tolist())
    assert specials == set(range(tts.text_start)) and text == set(range(tts.text_start, tts.audio_start))
    frames = 2
    zeros = [torch.zeros(frames * count, dtype=torch.long) for count in tts.pattern.counts]
    tops = [torch.full((frames * count,), config.card - 1) for count in tts.pattern.counts]
    low, high = tts.encode_audio(zeros), tts.encode_audio(tops)
    assert low.min() == tts.audio_start and high.max() == tts.vocab_size - 1
    slots = tts.pattern.slot_index(low.numel())
    blocks = slots if config.audio_offsets == "slot" else tts.pattern.slot_level[slots]
    assert torch.equal(low, tts.audio_start + blocks * config.card)  # block m holds [start + m card, + card)
    assert torch.equal(high - low, torch.full_like(low, config.card - 1))


def test_prompt_is_the_head_of_the_training_sequence():
    config = TTSFormatConfig(card=32)
    tts = TTSFormat(config)
    prompt = tts.prompt("Say this.")
    example = tts.build("Say this.", random_codes(config, 2))
    assert prompt[-1] == SOS and torch.equal(example.ids[: prompt.numel()], prompt)


def test_generated_codes_stop_at_end_of_speech_and_drop_a_cut_frame():
    config = TTSFormatConfig(card=32)
    tts = TTSFormat(config)
    codes = random_codes(config, frames=3)
    audio = tts.encode_audio(codes)
    after_end = torch.tensor([EOS, SOH, 7, PAD])
    result = tts.generated_codes(torch.cat([audio, after_end]))
    assert result.finished and result.dropped == 0
    assert all(torch.equal(back, level) for back, level in zip(result.codes, codes))
    cut = tts.generated_codes(audio[:-2])  # length limit hit 2 tokens before the end of frame 2
    assert not cut.finished and cut.dropped == 5
    assert [level.numel() for level in cut.codes] == [2, 4, 8]
    assert all(torch.equal(back, level[: back.numel()]) for back, level in zip(cut.codes, codes))


def test_generated_codes_refuse_tokens_outside_their_slot():
    config = TTSFormatConfig(card=32)
    tts = TTSFormat(config)
    audio = tts.encode_audio(random_codes(config, frames=2))
    wrong_slot = audio.clone()
    wrong_slot[9] = audio[8]  # slot 1's token at slot 2's position
    with pytest.raises(ValueError, match="audio position 9 \\(slot 2\\)"):
        tts.generated_codes(wrong_slot)
    text_in_audio = audio.clone()
    text_in_audio[12] = tts.text_start  # inside the cut last frame: still refused, not silently dropped
    with pytest.raises(ValueError, match="audio position 12"):
        tts.generated_codes(text_in_audio[:13])
    with pytest.raises(ValueError, match="no complete coarse frame"):
        tts.generated_codes(torch.cat([audio[:6], torch.tensor([EOS])]))
    with pytest.raises(ValueError, match="audio position 2"):
        tts.parse(torch.cat([tts.prompt("x"), wrong_slot[7:], torch.tensor([EOS])]))


def test_bad_codes_refused():
    tts = TTSFormat(TTSFormatConfig(card=32))
    codes = random_codes(tts.config, frames=1)
    with pytest.raises(ValueError, match=r"codes\[2\] must lie in \[0, card=32\)"):
        tts.build("x", [codes[0], codes[1], codes[2] + 32])
    with pytest.raises(ValueError, match="at least one coarse frame"):
        tts.build("x", [level[:0] for level in codes])
    with pytest.raises(ValueError, match="lengths"):
        tts.build("x", [codes[0], codes[1], codes[2][:3]])
