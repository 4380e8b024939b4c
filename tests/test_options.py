"""The option table is the one source: the CLI's flags, the validator's bounds, --resume's allow-list
and docs/options.md are all derived from each field's option(...)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_cli import _one_error_line, facegan_in_process

from facegan import checks, config
from facegan.config import SRTrainConfig, TrainConfig
from facegan.errors import FaceganError
from facegan.models.dcgan import ModelConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "options.md"


def test_docs_list_exactly_the_table():
    assert DOC.read_text() == config.options_markdown(), "regenerate docs/options.md (see config.options_markdown)"


@pytest.mark.parametrize("command,classes", [("train", (TrainConfig, ModelConfig)), ("train-sr", (SRTrainConfig,))])
def test_every_table_option_is_a_flag_of_its_command(command, classes):
    text = facegan_in_process(command, "--help").stdout
    for cls in classes:
        for f, _ in checks.options(cls):
            assert checks.flag(f) in text, (command, f.name)


def test_bounds_come_from_the_table():
    """Each declared bound is enforced, with the flag named, on a config built in Python."""
    base = TrainConfig(max_images=10)
    for f, o in checks.options(TrainConfig):
        if o.lo is None or f.name == "seed":
            continue
        bad = o.lo - 1 if not o.lo_open else o.lo
        with pytest.raises(FaceganError, match=checks.flag(f)):
            config.validate(dataclasses.replace(base, **{f.name: type(f.default or 1)(bad)}))


def test_resume_allows_exactly_the_options_marked_resumable(tiny_cfg):
    from facegan.train.loop import train
    from facegan.train.toolbox import resume_config

    train(tiny_cfg, progress=False)
    marked = {f.name for f, o in checks.options(TrainConfig) if o.resume}
    assert marked == config.resumable(tiny_cfg) and {"max_images", "device", "log_every", "dist_timeout"} <= marked
    cfg = resume_config(tiny_cfg.out, lr_g=0.1, seed=7, log_every=3, max_images=64)
    assert (cfg.lr_g, cfg.seed, cfg.log_every, cfg.max_images) == (tiny_cfg.lr_g, tiny_cfg.seed, 3, 64)


def test_a_table_bound_is_one_error_line_from_the_cli(tmp_path):
    p = facegan_in_process("train", "--preset", "quick", "--lr-g", "2", "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and "--lr-g must be a finite number > 0 and ≤ 1" in _one_error_line(p)
    assert not (tmp_path / "r").exists()


def test_one_default_preset():
    text = facegan_in_process("presets").stdout
    assert f"{config.DEFAULT_PRESET} *" in text and "* the default" in text
    assert TrainConfig().preset == config.DEFAULT_PRESET


def test_paired_metrics_are_refused_for_a_gans_periodic_evaluation():
    with pytest.raises(FaceganError, match="psnr measure an upscaler"):
        config.validate(dataclasses.replace(TrainConfig(max_images=10), eval_every=10, eval_metrics="fid,psnr"))


def test_help_lists_the_commands_area_by_area():
    import re

    text = facegan_in_process("--help").stdout
    listed = re.findall(r"^\W*([a-z][a-z-]*)\s{2,}", text, flags=re.M)  # each command line starts with its name
    order = ["prepare", "presets", "train", "train-sr", "generate", "evaluate", "serve", "anonymize"]
    where = [listed.index(name) for name in order]
    assert where == sorted(where), dict(zip(order, where))
