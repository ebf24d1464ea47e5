"""Typed recipes: unknown keys and wrong types are errors that name the key; overrides are parsed as YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmcontrast.cli import main
from mmcontrast.recipe import load_recipe
from mmcontrast.recipes.base import RecipeBase
from mmcontrast.typed_config import ConfigError

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
SBERT = Path(__file__).resolve().parents[1] / "recipes" / "sbert_stsb.yaml"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, RecipeBase)


def test_misspelled_key_in_file_is_named(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("method: sbert\ndata:\n  train: x.csv\ntrain:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train\.lerning_rate'"):
        load_recipe(path)


def test_close_spelling_is_suggested(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("method: sbert\ndata:\n  train: x.csv\ntrain:\n  batchsize: 8\n")
    with pytest.raises(ConfigError, match=r"did you mean 'train\.batch_size'"):
        load_recipe(path)


def test_misspelled_key_from_cli_is_named(capsys):
    code = main(["train", str(SBERT), "trian.lr=0.1"])
    assert code == 2
    assert "unknown key 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.batch_size=big", "train.batch_size"),
        ("train.lr=[1, 2]", "train.lr"),
        ("loss.name=hinge", "loss.name"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("data.columns=anchor", "data.columns"),
        ("model=cat", "model"),
    ],
)
def test_wrong_type_is_named(override, key):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        load_recipe(SBERT, [override])


def test_overrides_parse_yaml_values():
    recipe = load_recipe(SBERT, ["train.lr=3e-5", "train.batch_size=4", "data.columns=[a, b]", "eval.sts=null"])
    assert recipe.train.lr == pytest.approx(3e-5)
    assert recipe.train.batch_size == 4
    assert recipe.data.columns == ["a", "b"]
    assert recipe.eval.sts is None


def test_malformed_override_is_explained():
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(SBERT, ["train.lr"])


def test_recipe_reference_is_current():
    from mmcontrast.recipe import recipe_reference

    page = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
    assert page.read_text() == recipe_reference(), "docs/recipes.md is stale: run `mmcontrast recipe-docs`"


def test_every_recipe_key_is_documented():
    from mmcontrast.recipe import recipe_reference

    undocumented = [
        line for line in recipe_reference().splitlines() if line.startswith("| `") and line.endswith("|  |")
    ]
    assert not undocumented


def test_unknown_method_is_named(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("method: moco-v9\n")
    with pytest.raises(ConfigError, match=r"key 'method' must be one of .*sbert.*'moco-v9'"):
        load_recipe(path)
