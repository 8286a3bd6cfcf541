"""`train.py stage=lm experiment=finetune_lora|finetune_full init_from=DIR`: fine-tunes of a trained LM, end to end
on synthetic demo-shaped tokens (no codec or audio needed: codec_dir=null).

A base LM is trained for two steps, then fine-tuned with adapters for four. Checked: the optimizer held the adapters
only and every base weight (LM and conditioner) is bit-identical afterwards, the export is the merged LM with the
adapter in PEFT's layout beside it (base + adapter gives the merged LM's logits), a resumed LoRA run ends with the
uninterrupted run's weights, and what is refused before training. A full fine-tune with its first layer frozen
trains the rest from the base's weights; an init_from of another shape is refused naming the key.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from builders import add_lora, build_lora, load_lm_export
from conditioners.attributes import ConditioningAttributes
from data.token_shards import write_info, write_shard
from lit.lm_module import LMLightningModule, LMTrainingConfig
from lm.lm import LMConfig, LMModel
from lm.lora import LoRAConfig, load_adapter
from lm.patterns import DelayPattern
from tests.e2e.conftest import REPO, run

NUM_CODEBOOKS, CARD = 4, 512  # the demo codec's (configs/experiment/demo.yaml)


def lm_overrides(tokens: Path, run_dir: Path, max_steps: int) -> list[str]:
    """A CPU-cheap LM run of the demo shapes on `tokens`."""
    return [
        "stage=lm", f"data.tokens_root={tokens}", f"hydra.run.dir={run_dir}", "codec_dir=null",
        f"trainer.max_steps={max_steps}", "lm.training.warmup_steps=1", "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "data.loader.num_workers=0",
        "data.loader.batch_size=2", "data.tokens.window_frames=24", "checkpoint_every_n_steps=2",
    ]


def finetune_overrides(tokens: Path, base: Path, run_dir: Path) -> list[str]:
    # No text-encoder cache: a cached caption's encoding was computed in another batch, whose padding moves the
    # last bits; a resumed run's cold cache would then see different conditions than the uninterrupted run's.
    return [*lm_overrides(tokens, run_dir, max_steps=4), "experiment=finetune_lora", f"init_from={base}",
            "lm.training.lr=1e-2", "conditioner.text.description.cache_size=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Synthetic tokens, a 2-step base LM, and a 4-step LoRA fine-tune of it (checkpoints every 2 steps)."""
    root = tmp_path_factory.mktemp("finetune_lora")
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        folder = root / "tokens" / split
        folder.mkdir(parents=True)
        items = [(f"{split}{index}.wav", rng.integers(0, CARD, (NUM_CODEBOOKS, 60)),
                  {"description": f"piece {index} on piano", "instrument": "piano"}) for index in range(3)]
        write_info(folder, {"num_codebooks": NUM_CODEBOOKS, "cardinality": CARD})
        write_shard(folder, 0, items, dtype=np.dtype(np.int16))
    run("train.py", *lm_overrides(root / "tokens", root / "base", max_steps=2), "experiment=demo")
    finetune = run("train.py", *finetune_overrides(root / "tokens", root / "base", root / "finetune"))
    return {"root": root, "tokens": root / "tokens", "base": root / "base", "finetune": root / "finetune",
            "log": finetune.stdout + finetune.stderr}


def test_only_the_adapters_train_and_the_base_is_bit_identical(runs):
    base = load_file(runs["base"] / "export" / "lm.safetensors")
    checkpoint = torch.load(runs["finetune"] / "checkpoints" / "last.ckpt", weights_only=False)
    state = checkpoint["state_dict"]
    adapters = {name: tensor for name, tensor in state.items() if ".lora_" in name}
    frozen = {name.replace(".base_layer.", "."): tensor for name, tensor in state.items() if ".lora_" not in name}
    assert frozen.keys() == base.keys()
    assert all(torch.equal(frozen[name], base[name]) for name in base), "a base weight changed"
    assert any(name.startswith("conditioner.") for name in base)  # the conditioner's projection was kept frozen
    assert adapters and all(tensor.abs().sum() > 0 for name, tensor in adapters.items() if "lora_B" in name)
    optimized = [index for group in checkpoint["optimizer_states"][0]["param_groups"] for index in group["params"]]
    assert len(optimized) == len(adapters)  # AdamW held the adapters' parameters, nothing else


def test_export_is_the_merged_lm_and_the_adapter_in_peft_layout(runs):
    export = runs["finetune"] / "export"
    adapter = export / "adapter"
    assert {path.name for path in adapter.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                         "base_fingerprint.json"}
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert all(name.startswith("base_model.model.") and ".lora_" in name
               for name in load_file(adapter / "adapter_model.safetensors"))
    size = sum(path.stat().st_size for path in adapter.iterdir())
    assert f"adapter in {adapter}: {size} bytes" in runs["log"]

    merged, pattern, conditioner, _ = load_lm_export(runs["finetune"])
    base, _, _, _ = load_lm_export(runs["base"])
    sequence = torch.randint(0, CARD, (2, NUM_CODEBOOKS, 20), generator=torch.Generator().manual_seed(1))
    conditions = conditioner([ConditioningAttributes(text={"description": text}) for text in ("piano", "organ")],
                             seq_len=20)
    with torch.no_grad():
        before = base(sequence, conditions)
        expected = merged(sequence, conditions)
        actual = load_adapter(base, adapter)(sequence, conditions)
    assert (expected - before).abs().max() > 1e-3  # the adapter changed the LM
    assert (actual - expected).abs().max() < 1e-5


def test_a_resumed_lora_run_ends_with_the_same_weights(runs):
    resumed = runs["root"] / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    [step2] = (runs["finetune"] / "checkpoints").glob("*step=2.ckpt")
    shutil.copy(step2, resumed / "checkpoints")
    result = run("train.py", *finetune_overrides(runs["tokens"], runs["base"], resumed), "resume=true")
    assert "Restoring states from the checkpoint" in result.stdout + result.stderr
    for file in ("lm.safetensors", "adapter/adapter_model.safetensors"):
        expected = load_file(runs["finetune"] / "export" / file)
        actual = load_file(resumed / "export" / file)
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[name], actual[name]) for name in expected), f"{file} differs after resume"


def compose(*overrides: str, experiment: str = "finetune_lora"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=["stage=lm", f"experiment={experiment}", *overrides])


def test_lora_without_init_from_or_with_bad_keys_is_refused_before_any_model_is_built():
    import train

    with pytest.raises(ValueError, match=r"lora is set but stage=lm init_from=None.*init_from=DIR"):
        train.build_stage(compose("init_from=null"))
    with pytest.raises(ValueError, match=r"lora.rank must be a positive integer, got 0"):
        build_lora(compose("lora.rank=0"))
    with pytest.raises(ValueError, match=r"lora: .*rnak"):
        build_lora(compose("+lora.rnak=4"))
    assert build_lora(compose(experiment="demo")) is None  # the root's lora: null


def test_a_misspelled_lora_key_fails_at_compose_time():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="lora.rnak"):
        compose("lora.rnak=4")


def test_a_full_fine_tune_trains_from_the_base_with_its_first_layer_frozen(runs):
    run_dir = runs["root"] / "full"
    run("train.py", *lm_overrides(runs["tokens"], run_dir, max_steps=2), "experiment=finetune_full",
        f"init_from={runs['base']}", "lm.training.freeze_layers=1", "lm.training.freeze_embeddings=true")
    base = load_file(runs["base"] / "export" / "lm.safetensors")
    tuned = load_file(run_dir / "export" / "lm.safetensors")
    assert tuned.keys() == base.keys()  # a plain LM export
    frozen = [name for name in base if name.startswith(("model.transformer.layers.0.", "model.embedding."))]
    trained = [name for name in base if name.startswith(("model.transformer.layers.1.", "model.heads."))]
    assert frozen and trained
    assert all(torch.equal(base[name], tuned[name]) for name in frozen)
    # started from the base: two steps at lr 1e-4 (warmup 1) move each weight by about 2e-4 at most
    assert all(0 < (base[name] - tuned[name]).abs().max() < 1e-3 for name in trained)


@pytest.mark.parametrize("override, message", [
    ("codec.quantizer.num_codebooks=2", r"lm.model.num_codebooks=2 \(checkpoint: 4\)"),
    ("codec.quantizer.codebook_size=256", r"lm.model.card=256 \(checkpoint: 512\)"),
    ("lm.model.dim=64", r"lm.model.dim=64 \(checkpoint: 128\)"),
    ("lm.pattern.kind=parallel", r"lm.pattern.kind='parallel' \(checkpoint: 'delay'\)"),
    ("conditioner=text_and_melody", r"its weights do not fit this run's conditioner or LM: \['conditioner"),
])
def test_an_init_from_of_another_shape_is_refused_naming_the_key(runs, override, message):
    import train

    with pytest.raises(ValueError, match=message):
        train.build_stage(compose(f"init_from={runs['base']}", override, experiment="finetune_full"))


def test_a_missing_init_from_is_refused_naming_it(tmp_path):
    import train

    with pytest.raises(FileNotFoundError, match=f"init_from={tmp_path}/nothing: .* is not an LM export"):
        train.build_stage(compose(f"init_from={tmp_path}/nothing", experiment="finetune_full"))


def test_lora_targets_that_match_no_module_are_refused():
    model = LMModel(LMConfig(num_codebooks=2, card=16, dim=32, num_heads=2, num_layers=1, ffn_dim=64,
                             cross_attention=False))
    module = LMLightningModule(model, DelayPattern(2), LMTrainingConfig(warmup_steps=0, total_steps=10))
    with pytest.raises(ValueError, match=r"lora.targets: 'cross_attention' matches no module"):
        add_lora(module, LoRAConfig(targets=["self_attention", "cross_attention"]))


def test_merge_py_writes_the_base_with_the_adapter_merged(runs):
    adapter = runs["finetune"] / "export" / "adapter"
    out = runs["root"] / "merged"
    run("merge.py", "--checkpoint", str(runs["base"]), "--adapters", str(adapter), "--out", str(out))
    expected, actual = load_file(runs["finetune"] / "export" / "lm.safetensors"), load_file(out / "lm.safetensors")
    assert expected.keys() == actual.keys()  # a plain LM export, conditioner included
    assert max(float((expected[name] - actual[name]).abs().max()) for name in expected) < 1e-6
    assert json.loads((out / "merge.json").read_text())["adapters"][0]["weight"] == 1.0

    refused = run("merge.py", "--checkpoint", str(runs["finetune"]), "--adapters", str(adapter), "--out",
                  str(runs["root"] / "refused"), check=False)  # the fine-tune's merged LM is another base
    assert refused.returncode == 1 and "was trained on base" in refused.stderr
    assert not (runs["root"] / "refused").exists()


def test_adapters_in_the_pipeline_generate_what_the_merged_export_generates(runs):
    from builders import build_codec
    from pipeline import GenerationPipeline

    codec_dir = runs["root"] / "codec"
    torch.manual_seed(0)
    build_codec(compose(experiment="demo")).save(codec_dir)
    adapter = runs["finetune"] / "export" / "adapter"
    request = dict(prompts=["piano", "organ"], duration=0.2, seeds=[3, 4])
    base = GenerationPipeline.load(runs["base"], codec_dir=codec_dir).generate(**request).codes
    tuned = GenerationPipeline.load(runs["finetune"], codec_dir=codec_dir).generate(**request).codes
    adapted = GenerationPipeline.load(runs["base"], codec_dir=codec_dir, adapters=[adapter]).generate(**request).codes
    assert torch.equal(adapted, tuned) and not torch.equal(adapted, base)
    zeroed = GenerationPipeline.load(runs["base"], codec_dir=codec_dir, adapters=[adapter], adapter_weights=[0.0])
    assert torch.equal(zeroed.generate(**request).codes, base)  # weight 0: the base's tokens
    with pytest.raises(ValueError, match=r"adapter_weights must give one weight per adapter \(1\), got 2"):
        GenerationPipeline.load(runs["base"], codec_dir=codec_dir, adapters=[adapter], adapter_weights=[1.0, 1.0])
