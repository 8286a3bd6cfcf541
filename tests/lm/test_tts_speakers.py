"""Speaker tokens in the TTS format: [SPK] right after [SOH], its own id block after the audio, never a target;
the dataset's speaker dropout, held-out voices skipped, the training split's speaker list, unknown voices refused."""
import numpy as np
import pytest
import torch

from data.token_shards import write_info, write_shard
from data.tts_dataset import TTSDataset, TTSSequenceConfig, training_speakers
from lm.tts_format import SpecialToken, TTSFormat, TTSFormatConfig

SPEAKERS = ("en-gb+f4", "en-us+m3", "en-029+f5")
STRIDES, CARD = (2, 1), 16
PLAIN = TTSFormat(TTSFormatConfig(strides=STRIDES, card=CARD))
VOICED = TTSFormat(TTSFormatConfig(strides=STRIDES, card=CARD, speakers=SPEAKERS))


def random_codes(frames: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, CARD, (frames * count,), generator=generator) for count in PLAIN.pattern.counts]


def write_tokens(folder, items: list[tuple[str, dict]], frames: int = 2) -> None:
    """A token folder as the SNAC extraction writes it: (text, extra sidecar fields) per item."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    slots = PLAIN.pattern.frame_size
    write_info(folder, {"multirate": {"strides": list(STRIDES), "order": "depth_first"}, "cardinality": CARD,
                        "num_codebooks": slots, "sample_rate": 24000, "frame_rate": 12.0, "channels": 1})
    write_shard(folder, 0, [(f"clip{index}.wav", rng.integers(0, CARD, size=(slots, frames)), {"text": text, **extra})
                            for index, (text, extra) in enumerate(items)], dtype=np.dtype(np.int16))


def test_the_speaker_token_follows_start_of_human_and_changes_nothing_else():
    codes = random_codes(frames=3)
    plain, voiced = PLAIN.build("the cat sat.", codes), VOICED.build("the cat sat.", codes, speaker="en-us+m3")
    assert VOICED.speaker_start == PLAIN.vocab_size and VOICED.vocab_size == PLAIN.vocab_size + 3
    assert voiced.ids[0] == SpecialToken.START_OF_HUMAN
    assert voiced.ids[1] == PLAIN.vocab_size + 1  # en-us+m3 is speakers[1]
    assert torch.equal(torch.cat([voiced.ids[:1], voiced.ids[2:]]), plain.ids)  # audio ids do not move
    assert not voiced.loss_mask[1]
    assert torch.equal(torch.cat([voiced.loss_mask[:1], voiced.loss_mask[2:]]), plain.loss_mask)
    assert torch.equal(VOICED.build("the cat sat.", codes).ids, plain.ids)  # no speaker: the speakerless sequence


@pytest.mark.parametrize("speaker", [None, *SPEAKERS])
def test_parse_reads_back_text_codes_and_speaker_and_the_prompt_is_the_head(speaker):
    codes = random_codes(frames=2, seed=1)
    example = VOICED.build("is it raining?", codes, speaker)
    parsed = VOICED.parse(torch.cat([example.ids, torch.zeros(3, dtype=torch.long)]))  # trailing PAD
    assert (parsed.text, parsed.speaker) == ("is it raining?", speaker)
    assert all(torch.equal(a, b) for a, b in zip(parsed.codes, codes))
    prompt = VOICED.prompt("is it raining?", speaker)
    assert torch.equal(example.ids[:prompt.numel()], prompt) and prompt[-1] == SpecialToken.START_OF_SPEECH


def test_an_unknown_speaker_is_refused_naming_it_and_the_known_ones():
    with pytest.raises(ValueError, match=r"speaker 'en-gb\+m9' is unknown; the known speakers are \['en-gb\+f4'"):
        VOICED.prompt("hello", "en-gb+m9")
    with pytest.raises(ValueError, match="'en-gb\\+f4' is unknown.*no speaker tokens"):
        PLAIN.build("hello", random_codes(frames=1), speaker="en-gb+f4")
    with pytest.raises(ValueError, match="speakers must be non-empty names without repeats"):
        TTSFormat(TTSFormatConfig(strides=STRIDES, card=CARD, speakers=("a", "a")))


def test_speaker_dropout_rate_and_loss_mask_over_many_items(tmp_path):
    write_tokens(tmp_path / "tokens", [(text, {"speaker": speaker}) for text, speaker in
                                       [("one", "en-gb+f4"), ("two", "en-us+m3"), ("three", "en-029+f5")]])
    dataset = TTSDataset(str(tmp_path / "tokens"), VOICED, TTSSequenceConfig(speaker_dropout=0.1, seed=3),
                         shuffle=True)
    examples = [dataset[position] for position in range(3000)]
    parsed = [VOICED.parse(example.ids) for example in examples]
    dropped = sum(item.speaker is None for item in parsed) / len(parsed)
    assert abs(dropped - 0.1) < 0.02, dropped  # 3 standard deviations of a 3000-draw share at 0.1: 0.016
    voices = {item.text: item.speaker for item in parsed if item.speaker is not None}
    assert voices == {"one": "en-gb+f4", "two": "en-us+m3", "three": "en-029+f5"}
    for example in examples[:50]:
        start = int((example.ids == SpecialToken.START_OF_SPEECH).nonzero()) + 1
        expected = torch.zeros_like(example.loss_mask)
        expected[start:] = True  # exactly the audio codes and [EOS]
        assert torch.equal(example.loss_mask, expected)
    assert all(torch.equal(dataset[position].ids, examples[position].ids) for position in range(20))  # reproducible
    never = TTSDataset(str(tmp_path / "tokens"), VOICED, TTSSequenceConfig(speaker_dropout=0.0), shuffle=True)
    assert all(VOICED.parse(never[position].ids).speaker is not None for position in range(300))


def test_held_out_voices_are_skipped_and_a_missing_speaker_refused(tmp_path):
    write_tokens(tmp_path / "tokens", [("one", {"speaker": "en-gb+f4"}), ("two", {"speaker": "en-gb-x-gbclan+m3"})])
    dataset = TTSDataset(str(tmp_path / "tokens"), VOICED, TTSSequenceConfig(), shuffle=False)
    assert len(dataset) == 1 and dataset.skipped == {"speaker outside tts.format.speakers": 1}
    plain = TTSDataset(str(tmp_path / "tokens"), PLAIN, TTSSequenceConfig(), shuffle=False)  # voices ignored
    assert len(plain) == 2 and all(PLAIN.parse(plain[index].ids).speaker is None for index in range(2))
    write_tokens(tmp_path / "mute", [("one", {"speaker": "en-gb+f4"}), ("two", {})])
    with pytest.raises(ValueError, match="clip1.wav .* no sidecar field speaker_field='speaker'"):
        TTSDataset(str(tmp_path / "mute"), VOICED, TTSSequenceConfig(), shuffle=False)
    with pytest.raises(ValueError, match="clip1.wav .* no sidecar field speaker_field='speaker'"):
        training_speakers(str(tmp_path / "mute"), "speaker")


def test_the_training_speakers_are_sorted_and_distinct(tmp_path):
    write_tokens(tmp_path / "tokens", [("a", {"speaker": "b+1"}), ("b", {"speaker": "a+2"}), ("c", {"speaker": "b+1"})])
    assert training_speakers(str(tmp_path / "tokens"), "speaker") == ["a+2", "b+1"]
    assert training_speakers(str(tmp_path / "tokens"), None) == []
