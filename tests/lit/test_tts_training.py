"""Training the TTS LM: sequences from multi-rate token shards, the loss on exactly the audio span, memorisation of
a tiny set (then greedy generation speaks the memorised codes back), and `train.py stage=tts` end to end."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from safetensors.torch import load_file
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM

from builders import load_tts_export
from data.token_shards import write_info, write_shard
from data.tts_dataset import TTSDataset, TTSSequenceConfig
from lit.lm_module import LMTrainingConfig
from lit.tts_module import WEIGHTS_FILE, TTSLightningModule, target_losses
from lm.hf_tts_lm import HFTTSLM
from lm.tts_format import SpecialToken, TTSFormat, TTSFormatConfig
from lm.tts_generator import TTSGenerationConfig, TTSGenerator
from lm.tts_lm import TTSLM, TTSLMConfig
from tests.e2e.conftest import run

STRIDES, CARD = (2, 1), 16  # F = 3 slots per coarse frame
FORMAT = TTSFormat(TTSFormatConfig(strides=STRIDES, card=CARD))
SENTENCES = ["the cat sat.", "a dog ran far!", "is it raining?", "one, two, three"]
VOICES = ["en-us+m3", "en-gb+f4", "en-us+m3", "en-029+f5"]  # the sidecar `speaker` of each sentence


def write_tokens(folder: Path, texts: list[str], frames: list[int], seed: int = 0,
                 strides: tuple[int, ...] = STRIDES) -> list[np.ndarray]:
    """A token folder as the SNAC extraction writes it: frames [F, T_c] per item, `text` and `speaker` in its
    sidecar."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    slots = FORMAT.pattern.frame_size
    codes = [rng.integers(0, CARD, size=(slots, count)) for count in frames]
    write_info(folder, {"multirate": {"strides": list(strides), "order": "depth_first"}, "cardinality": CARD,
                        "num_codebooks": slots, "sample_rate": 24000, "frame_rate": 12.0, "channels": 1})
    write_shard(folder, 0, [(f"clip{index}.wav", item, {"text": text, "speaker": VOICES[index % len(VOICES)]})
                            for index, (item, text) in enumerate(zip(codes, texts))], dtype=np.dtype(np.int16))
    return codes


def train_briefly(model: TTSLM | HFTTSLM, dataset: TTSDataset, steps: int) -> TTSLightningModule:
    """`steps` batches of 4 at lr 3e-3 (10 warm-up steps), seeded, no logging or validation; returns the module."""
    module = TTSLightningModule(model, LMTrainingConfig(lr=3e-3, weight_decay=0.0, warmup_steps=10,
                                                        total_steps=steps))
    pl.seed_everything(0)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(dataset, batch_size=4, sampler=range(4 * steps), collate_fn=dataset.collate))
    return module


def test_the_loss_mask_covers_exactly_the_audio_span_and_end_of_speech(tmp_path):
    write_tokens(tmp_path / "tokens", SENTENCES, frames=[2, 5, 3, 4])
    dataset = TTSDataset(str(tmp_path / "tokens"), FORMAT, TTSSequenceConfig(), shuffle=False)
    batch = dataset.collate([dataset[index] for index in range(4)])
    ids, mask = batch["ids"], batch["loss_mask"]
    for row in range(4):
        start = int((ids[row] == SpecialToken.START_OF_SPEECH).nonzero()) + 1
        end = int((ids[row] == SpecialToken.END_OF_SPEECH).nonzero())
        expected = torch.zeros_like(mask[row])
        expected[start:end + 1] = True  # the audio codes and [EOS]; not the prompt, not the padding
        assert torch.equal(mask[row], expected)
        assert end - start == 3 * [2, 5, 3, 4][row]
    logits = torch.randn(*ids.shape, FORMAT.vocab_size)
    loss, _ = target_losses(logits, ids, mask)
    reference = [F.cross_entropy(logits[row, position - 1], ids[row, position])
                 for row in range(4) for position in range(ids.shape[1]) if mask[row, position]]
    torch.testing.assert_close(loss, torch.stack(reference).mean())


def test_the_dataset_reads_back_the_codes_and_text_it_was_given(tmp_path):
    codes = write_tokens(tmp_path / "tokens", SENTENCES[:2], frames=[2, 3])
    dataset = TTSDataset(str(tmp_path / "tokens"), FORMAT, TTSSequenceConfig(), shuffle=False)
    parsed = FORMAT.parse(dataset[1].ids)
    assert parsed.text == SENTENCES[1]
    assert torch.equal(FORMAT.pattern.to_frames([level[None] for level in parsed.codes])[0],
                       torch.from_numpy(codes[1]))


def test_long_and_untokenizable_utterances_are_skipped_and_counted(tmp_path):
    write_tokens(tmp_path / "tokens", ["short", "far too long for the limit", "caf\u00e9 \u4e2d"], frames=[2, 2, 2])
    dataset = TTSDataset(str(tmp_path / "tokens"), FORMAT, TTSSequenceConfig(max_length=20), shuffle=True)
    assert len(dataset) == 1 and FORMAT.parse(dataset[5].ids).text == "short"
    assert dataset.skipped == {"longer than max_length": 1, "text outside the alphabet": 1}


def test_tokens_of_another_codec_layout_are_refused(tmp_path):
    write_tokens(tmp_path / "tokens", SENTENCES[:1], frames=[2], strides=(4, 2))
    with pytest.raises(ValueError, match=r"strides: tokens \[4, 2\], tts.format \[2, 1\]"):
        TTSDataset(str(tmp_path / "tokens"), FORMAT, TTSSequenceConfig(), shuffle=False)


def test_a_short_run_memorises_four_utterances_and_speaks_them_back(tmp_path):
    """4 sentences with fixed random codes: the loss on their audio falls from ln(16) = 2.77 nats below 0.05, and
    greedy constrained generation from each text returns its codes exactly."""
    codes = write_tokens(tmp_path / "tokens", SENTENCES, frames=[3, 4, 3, 4])
    dataset = TTSDataset(str(tmp_path / "tokens"), FORMAT, TTSSequenceConfig(), shuffle=True)
    model = TTSLM(TTSLMConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=128), vocab_size=FORMAT.vocab_size)
    train_briefly(model, dataset, steps=150)
    batch = dataset.collate([dataset[index] for index in range(4)])
    with torch.no_grad():
        loss, accuracy = target_losses(model.eval()(batch["ids"]), batch["ids"], batch["loss_mask"])
    assert loss < 0.05 and accuracy == 1.0, (float(loss), float(accuracy))
    generator = TTSGenerator(model, FORMAT, TTSGenerationConfig(temperature=0.0, max_audio_frames=8))
    for text, expected in zip(SENTENCES, codes):
        spoken = generator.generate(text)
        assert spoken.finished
        assert torch.equal(FORMAT.pattern.to_frames([level[None] for level in spoken.codes])[0],
                           torch.from_numpy(expected).long())


def test_train_py_stage_tts_runs_end_to_end_and_exports(tmp_path):
    for split in ("train", "valid"):
        write_tokens(tmp_path / "tokens" / split, SENTENCES, frames=[2, 3, 2, 3])
    run_dir = tmp_path / "run"
    run("train.py", "stage=tts", f"data.tokens_root={tmp_path / 'tokens'}", f"hydra.run.dir={run_dir}",
        "tts.format.strides=[2,1]", f"tts.format.card={CARD}", "tts.model.dim=32", "tts.model.num_layers=1",
        "tts.model.ffn_dim=64", "tts.training.warmup_steps=1", "trainer.max_steps=3", "trainer.accelerator=cpu",
        "trainer.val_check_interval=3", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
        "data.loader.batch_size=2", "data.loader.num_workers=0", "checkpoint_every_n_steps=3")
    model, tts_format, cfg = load_tts_export(run_dir)
    speakers = ["en-029+f5", "en-gb+f4", "en-us+m3"]  # the training split's, sorted: one token each
    assert list(tts_format.config.speakers) == speakers and cfg.trainer.max_steps == 3
    assert tts_format.vocab_size == FORMAT.vocab_size + len(speakers) == model.vocab_size
    weights = load_file(run_dir / "export" / WEIGHTS_FILE)
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[name], value) for name, value in model.state_dict().items())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 3 and checkpoint["non_finite_steps"]["skipped"] == 0


def test_a_hugging_face_base_trains_on_the_tts_sequences_and_its_export_loads_without_the_base(tmp_path):
    """A tiny random Llama extended with the TTS vocabulary: the audio loss of 4 utterances falls below 0.1 nats
    in 200 steps (0.021 measured); the export (weights + extended architecture) loads without the base directory."""
    LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path / "base")
    write_tokens(tmp_path / "tokens", SENTENCES, frames=[3, 4, 3, 4])
    dataset = TTSDataset(str(tmp_path / "tokens"), FORMAT, TTSSequenceConfig(), shuffle=True)
    model = HFTTSLM.from_pretrained(tmp_path / "base", vocab_size=FORMAT.vocab_size)
    module = train_briefly(model, dataset, steps=200)
    batch = dataset.collate([dataset[index] for index in range(4)])
    with torch.no_grad():
        loss, _ = target_losses(model.eval()(batch["ids"]), batch["ids"], batch["loss_mask"])
    assert loss < 0.1, float(loss)

    export = tmp_path / "run" / "export"
    module.save(export)
    OmegaConf.save({"tts": {"format": {"strides": list(STRIDES), "card": CARD}, "hf_base": str(tmp_path / "base")}},
                   export / "train_config.yaml")
    shutil.rmtree(tmp_path / "base")
    loaded, tts_format, _ = load_tts_export(tmp_path / "run")
    assert isinstance(loaded, HFTTSLM) and tts_format.vocab_size == FORMAT.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["ids"]), model(batch["ids"]), atol=0, rtol=0)


@pytest.mark.parametrize("body,key", [("model:\n    num_head: 8\n", "num_head"),
                                      ("format:\n    cards: 16\n", "cards"),
                                      ("generation:\n    max_audio_frame: 9\n", "max_audio_frame")])
def test_a_misspelled_tts_key_fails_at_compose_time_naming_it(tmp_path, body, key):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typo.yaml").write_text(f"# @package _global_\ntts:\n  {body}")
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "configs"), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ValidationError), match=key):
            compose(config_name="config", overrides=["stage=tts", f"hydra.searchpath=[file://{tmp_path}]",
                                                     "experiment=typo"])


def test_the_tts_demo_format_matches_its_codec():
    """experiment=tts_demo: tts.format describes the tokens its codec stage extracts (strides, codebook size)."""
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["stage=tts", "experiment=tts_demo"])
    assert list(cfg.tts.format.strides) == list(cfg.codec.quantizer.strides)
    assert cfg.tts.format.card == cfg.codec.quantizer.codebook_size


def test_a_non_finite_gradient_is_dropped_and_counted_as_in_the_music_lm():
    model = TTSLM(TTSLMConfig(dim=32, num_heads=4, num_layers=1, ffn_dim=64), vocab_size=FORMAT.vocab_size)
    module = TTSLightningModule(model, LMTrainingConfig(warmup_steps=0, total_steps=10, max_consecutive_skips=2))
    module.log = lambda *args, **kwargs: None  # no trainer to log to
    module.last_loss = torch.tensor(1.0)
    for parameter in module.parameters():
        parameter.grad = torch.zeros_like(parameter)
    model.head.weight.grad[0, 0] = float("nan")
    module.on_before_optimizer_step(None)
    assert module.skipped_steps == 1 and all(parameter.grad is None for parameter in module.parameters())
