"""configs/experiment/ablation_*.yaml: every job of each declared sweep composes, builds, and varies what it names."""
import itertools
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from builders import build_codec, build_codec_loss, build_lm, build_pattern
from lit.codec_module import CodecModule

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def sweep_jobs(experiment: str, stage: str) -> list:
    """The composed config of every job `train.py -m experiment=... stage=...` would run (hydra.sweeper.params)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        base = [f"experiment={experiment}", f"stage={stage}"]
        params = compose("config", overrides=base, return_hydra_config=True).hydra.sweeper.params
        parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
        choices = [[f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]
                   for override in parsed]
        return [compose("config", overrides=[*base, *job]) for job in itertools.product(*choices)]


def test_pattern_sweep_trains_every_pattern_on_the_demo_tokens():
    jobs = sweep_jobs("ablation_patterns", "lm")
    patterns = [type(build_pattern(cfg)).__name__ for cfg in jobs]
    assert patterns == ["DelayPattern", "ParallelPattern", "UnrolledPattern", "VallePattern", "MusicLMPattern"]
    for cfg in jobs:
        assert cfg.data.tokens_root == "outputs/demo/tokens" and cfg.trainer.max_steps == 300
        assert build_lm(cfg).config.num_codebooks == build_pattern(cfg).num_codebooks == 4


def test_codec_sweep_is_the_full_grid_of_its_four_factors():
    jobs = sweep_jobs("ablation_codec", "codec")
    seen = set()
    for cfg in jobs:
        module = CodecModule(build_codec(cfg), build_codec_loss(cfg))
        discriminator = module.config.discriminator
        assert discriminator.stft is not None  # MS-STFTD in both sets; MPD or multi-band STFT beside it
        assert (discriminator.period is None) != (discriminator.multiband_stft is None)
        seen.add((module.codec.config.quantizer.lookup, module.config.balancer.enabled,
                  module.codec.config.quantizer.dropout, discriminator.period is None))
    assert seen == set(itertools.product(["ema", "factorized"], [False, True], [0.0, 0.5], [False, True]))
