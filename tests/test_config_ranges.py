"""Configs checked up front: every numeric key has a declared range, checked when a recipe is read (and on configs
built in Python); precision the hardware cannot honour is refused; YAML syntax errors name the file or override,
the line and the column; the CLI reports each as one line and exit 2 (issue 9, findings 7 and 8)."""

from __future__ import annotations

import dataclasses
import re
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import pytest
import torch

from mmcontrast.cli import main
from mmcontrast.engine.config import TrainingConfig, check_hardware
from mmcontrast.recipe import RECIPES, load_recipe
from mmcontrast.recipes.sbert import SbertRecipe, TextDataConfig
from mmcontrast.typed_config import ConfigError, Range, apply_overrides, check_ranges, load_yaml

ROOT = Path(__file__).resolve().parents[1]
SBERT = ROOT / "recipes" / "sbert_stsb.yaml"
CLIP = ROOT / "recipes" / "clip_digits.yaml"
SIMCLR = ROOT / "recipes" / "simclr_digits.yaml"

# Finding 7: values that were accepted and then ran full epochs, exported an untrained model, crashed mid-run
# with a traceback or silently dropped rows, or failed late with an error that did not name the key.
FINDINGS = [
    (SBERT, "train.max_steps=0", "train.max_steps"),
    (SBERT, "train.max_steps=-5", "train.max_steps"),
    (SBERT, "train.epochs=0", "train.epochs"),
    (SBERT, "train.logging_steps=0", "train.logging_steps"),
    (SBERT, "train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps"),
    (SBERT, "train.cache_chunk_size=-1", "train.cache_chunk_size"),
    (SBERT, "train.cache_chunk_size=0", "train.cache_chunk_size"),
    (SBERT, "data.score_max=0", "data.score_max"),
    (SBERT, "data.limit=-10", "data.limit"),
    (SBERT, "train.save_steps=-1", "train.save_steps"),
    (SBERT, "train.warmup_ratio=1.5", "train.warmup_ratio"),
    (SBERT, "train.warmup_ratio=-0.1", "train.warmup_ratio"),
    (SBERT, "train.max_grad_norm=-1", "train.max_grad_norm"),
    (CLIP, "model.embed_dim=0", "model.embed_dim"),
    (CLIP, "data.image_size=0", "data.image_size"),
]

# The same mechanism on the other numeric keys of each recipe section.
OTHER_KEYS = [
    (SBERT, "train.batch_size=0", "train.batch_size"),
    (SBERT, "train.lr=0", "train.lr"),
    (SBERT, "train.lr=.inf", "train.lr"),
    (SBERT, "train.lr=.nan", "train.lr"),
    (SBERT, "train.weight_decay=-0.1", "train.weight_decay"),
    (SBERT, "train.adam_betas=[0.9, 1.0]", "train.adam_betas[1]"),
    (SBERT, "train.adam_betas=[-0.1, 0.9]", "train.adam_betas[0]"),
    (SBERT, "train.adam_eps=0", "train.adam_eps"),
    (SBERT, "train.seed=-1", "train.seed"),
    (SBERT, "train.save_total_limit=-1", "train.save_total_limit"),
    (SBERT, "train.eval_steps=-1", "train.eval_steps"),
    (SBERT, "train.num_workers=-1", "train.num_workers"),
    (SBERT, "model.max_length=0", "model.max_length"),
    (SBERT, "data.min_score=.inf", "data.min_score"),
    (SBERT, "loss.scale=0", "loss.scale"),
    (SBERT, "loss.margin=-1", "loss.margin"),
    (SBERT, "eval.limit=0", "eval.limit"),
    (SBERT, "eval.batch_size=0", "eval.batch_size"),
    (CLIP, "model.logit_scale_init=0.5", "model.logit_scale_init"),
    (CLIP, "model.text.max_length=0", "model.text.max_length"),
    (CLIP, "model.image.image_size=0", "model.image.image_size"),
    (CLIP, "data.limit=0", "data.limit"),
    (SIMCLR, "model.temperature=0", "model.temperature"),
    (SIMCLR, "model.loss_chunk_size=0", "model.loss_chunk_size"),
    (SIMCLR, "model.head.out_dim=0", "model.head.out_dim"),
    (SIMCLR, "model.head.hidden_dim=0", "model.head.hidden_dim"),
    (SIMCLR, "views.num_views=1", "views.num_views"),
    (SIMCLR, "views.strength=-1", "views.strength"),
    (SIMCLR, "views.crop_scale=[0, 1]", "views.crop_scale[0]"),
    (SIMCLR, "views.crop_scale=[0.5, 1.5]", "views.crop_scale[1]"),
    (SIMCLR, "views.seed=-1", "views.seed"),
    (SIMCLR, "data.image_size=0", "data.image_size"),
    (SIMCLR, "data.limit=-1", "data.limit"),
    (SIMCLR, "eval.k=0", "eval.k"),
    (SIMCLR, "eval.limit=0", "eval.limit"),
]


def _case_id(case: tuple[Path, str, str]) -> str:
    return f"{case[0].stem}:{case[1]}"


@pytest.mark.parametrize("case", FINDINGS + OTHER_KEYS, ids=_case_id)
def test_out_of_range_value_is_refused_naming_the_key(case):
    path, override, key = case
    with pytest.raises(ConfigError, match=f"^{re.escape(f'{path}: key {key!r} must be ')}"):
        load_recipe(path, [override])


def test_range_error_says_what_is_allowed():
    with pytest.raises(ConfigError) as error:
        load_recipe(SBERT, ["train.max_steps=0"])
    assert str(error.value) == f"{SBERT}: key 'train.max_steps' must be >= 1 or null, got 0"
    with pytest.raises(ConfigError, match=r"key 'train\.warmup_ratio' must be in \[0, 1\], got 1\.5$"):
        load_recipe(SBERT, ["train.warmup_ratio=1.5"])
    with pytest.raises(ConfigError, match=r"key 'train\.lr' must be a finite number, got inf$"):
        load_recipe(SBERT, ["train.lr=.inf"])


@pytest.mark.parametrize(
    ("path", "overrides"),
    [
        (SBERT, ["train.max_steps=1", "train.warmup_ratio=0", "train.save_steps=0", "train.max_grad_norm=0"]),
        (SBERT, ["train.warmup_ratio=1", "train.save_total_limit=0", "train.adam_betas=[0, 0.999]"]),
        (SBERT, ["train.seed=0", "train.seed=4294967295", "data.min_score=-3", "train.cache_chunk_size=1"]),
        (CLIP, ["model.logit_scale_init=1", "model.logit_scale_init=100", "model.embed_dim=1"]),
        (SIMCLR, ["views.crop_scale=[1, 1]", "views.strength=0", "views.num_views=2", "eval.k=1"]),
    ],
    ids=["sbert-low", "sbert-high", "sbert-seed", "clip", "simclr"],
)
def test_values_on_the_bounds_are_accepted(path, overrides):
    load_recipe(path, overrides)


def _keys_without_range(tp: Any, key: str) -> list[str]:
    """Dotted keys under annotation ``tp`` holding an int or a float without a declared :class:`Range`."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        return [] if any(isinstance(extra, Range) for extra in extras) else _keys_without_range(base, key)
    if dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp, include_extras=True)
        return [found for name, hint in hints.items() for found in _keys_without_range(hint, f"{key}{name}.")]
    if origin in (Union, types.UnionType, list, dict):
        return [found for arg in get_args(tp) for found in _keys_without_range(arg, key)]
    return [key.rstrip(".")] if tp in (int, float) else []


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_every_numeric_key_declares_a_range(method):
    assert _keys_without_range(RECIPES[method].schema, "") == [], (
        "give these keys a range in their type (typed_config.PositiveInt, Annotated[float, Range(...)], ...)"
    )


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_defaults_are_in_range(method):
    check_ranges(RECIPES[method].schema(), f"{method} defaults")


def test_recipe_reference_shows_the_ranges():
    page = (ROOT / "docs" / "recipes.md").read_text()
    assert "| `train.max_steps` | int (>= 1) \\| null |" in page
    assert "| `train.adam_betas` | list[float (in [0, 1))] |" in page
    assert "| `views.crop_scale` | list[float (in (0, 1])] |" in page


def test_check_ranges_checks_configs_built_in_python():
    check_ranges(TrainingConfig(), "Trainer", prefix="train.")
    with pytest.raises(ConfigError, match=r"^Trainer: key 'train\.max_steps' must be >= 1 or null, got 0$"):
        check_ranges(TrainingConfig(max_steps=0), "Trainer", prefix="train.")
    with pytest.raises(ConfigError, match=r"key 'train\.adam_betas\[1\]' must be in \[0, 1\)"):
        check_ranges(TrainingConfig(adam_betas=(0.9, 1.5)), "Trainer", prefix="train.")
    recipe = SbertRecipe(data=TextDataConfig(score_max=0.0))
    with pytest.raises(ConfigError, match=r"^my recipe: key 'data\.score_max' must be > 0, got 0\.0$"):
        check_ranges(recipe, "my recipe")


def test_a_range_has_one_bound_per_side():
    assert str(Range(ge=0, lt=1)) == "in [0, 1)"
    assert str(Range(gt=0)) == "> 0"
    assert str(Range()) == "any finite number"
    with pytest.raises(TypeError, match="at most one lower bound"):
        Range(ge=0, gt=0)


class _Device:
    def __init__(self, kind: str) -> None:
        self.device = torch.device(kind)


def test_fp16_on_cpu_is_refused(monkeypatch):
    monkeypatch.setattr("mmcontrast.engine.config.process_state", lambda: _Device("cpu"))
    with pytest.raises(ConfigError, match=r"^r\.yaml: key 'train\.mixed_precision' is fp16, which needs a GPU.*bf16"):
        check_hardware(TrainingConfig(mixed_precision="fp16"), "r.yaml")
    check_hardware(TrainingConfig(mixed_precision="bf16"), "r.yaml")  # CPU autocast honours bf16


def test_bf16_on_a_gpu_without_bf16_is_refused(monkeypatch):
    monkeypatch.setattr("mmcontrast.engine.config.process_state", lambda: _Device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ConfigError, match=r"key 'train\.mixed_precision' is bf16, which Tesla T4 does not support"):
        check_hardware(TrainingConfig(mixed_precision="bf16"), "r.yaml")
    check_hardware(TrainingConfig(mixed_precision="fp16"), "r.yaml")


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is honoured on a GPU")
def test_fp16_recipe_on_this_cpu_is_refused_when_read():
    with pytest.raises(ConfigError, match=r"key 'train\.mixed_precision' is fp16"):
        load_recipe(SBERT, ["train.mixed_precision=fp16"])


def test_yaml_syntax_error_in_a_file_names_file_line_and_column(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("method: sbert\ntrain:\n  lr: 1: 2\n")
    with pytest.raises(
        ConfigError, match=f"^{re.escape(str(path))}: YAML syntax error at line 3, column 8: mapping values"
    ):
        load_yaml(path)


def test_yaml_unclosed_bracket_names_where_it_opened(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("method: sbert\ntrain:\n  adam_betas: [0.9, 0.98\n")
    with pytest.raises(ConfigError, match=r"line 4, column 1: .*flow sequence at line 3, column 15\)$"):
        load_yaml(path)


def test_recipe_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"method: sbert\n\xff\xfe\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: a recipe must be UTF-8 text"):
        load_yaml(path)


def test_yaml_syntax_error_in_an_override_names_the_override_and_column():
    with pytest.raises(ConfigError, match=r"^override 'train\.lr=\[1, 2': the value is not valid YAML at line 1, "):
        apply_overrides({}, ["train.lr=[1, 2"])
    with pytest.raises(ConfigError, match=r"override 'data\.train=a: b: c': .* line 1, column 16: mapping values"):
        apply_overrides({}, ["data.train=a: b: c"])


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("path", "override", "key"),
    [
        (SBERT, "train.max_steps=0", "train.max_steps"),
        (SBERT, "train.logging_steps=0", "train.logging_steps"),
        (SBERT, "data.limit=-10", "data.limit"),
        (CLIP, "model.embed_dim=0", "model.embed_dim"),
        (SIMCLR, "views.crop_scale=[0, 1]", "views.crop_scale[0]"),
    ],
    ids=lambda v: v.stem if isinstance(v, Path) else v,
)
def test_cli_reports_a_range_error_on_one_line(capsys, path, override, key):
    line = _one_line_error(capsys, ["train", str(path), override])
    assert line.startswith(f"mmcontrast train: error: {path}: key '{key}' must be ")


def test_cli_reports_yaml_errors_on_one_line(capsys, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("method: sbert\ntrain:\n  lr: 1: 2\n")
    assert f"{path}: YAML syntax error at line 3, column 8" in _one_line_error(capsys, ["train", str(path)])
    line = _one_line_error(capsys, ["train", str(SBERT), "train.lr=[1, 2"])
    assert "override 'train.lr=[1, 2': the value is not valid YAML at line 1, column 15" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is honoured on a GPU")
def test_cli_refuses_fp16_on_cpu_on_one_line(capsys):
    line = _one_line_error(capsys, ["train", str(SBERT), "train.mixed_precision=fp16"])
    assert "key 'train.mixed_precision' is fp16" in line
