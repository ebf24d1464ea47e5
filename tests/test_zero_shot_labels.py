"""Zero-shot class names are matched to a labelled set by name, never by position.

A class folder lists its classes in alphabetical order (eight, five, four, ... zero) while people name digits
in counting order (zero, one, ... nine): the same model must score the same with `--classes` in any order, or
without it, from the command line and from a recipe's `eval.classes`. A count or name mismatch is an error
naming both lists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmcontrast.cli import main
from mmcontrast.data.images import DIGIT_NAMES, digits
from mmcontrast.evaluation.zero_shot import classes_by_name
from mmcontrast.recipe import load_recipe
from mmcontrast.recipes.clip import _zero_shot

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_digits.yaml"
COUNTING_ORDER = list(DIGIT_NAMES)  # zero one two ... nine
SHUFFLED = ["seven", "zero", "nine", "two", "four", "one", "eight", "three", "six", "five"]


class OracleDualEncoder:
    """A dual encoder that knows the answer: an image embeds as the one-hot of its digit, a prompt as the one-hot
    of the digit name it holds. Correct label matching gives top-1 = 1.0; matching by position does not."""

    def __init__(self) -> None:
        self.digit_of = {row["image"].tobytes(): row["label"] for row in digits("all").rows}

    def encode_images(self, images) -> torch.Tensor:
        labels = [self.digit_of[image.convert("RGB").tobytes()] for image in images]
        return F.one_hot(torch.tensor(labels), 10).float()

    def encode_texts(self, texts) -> torch.Tensor:
        labels = [next(DIGIT_NAMES.index(w) for w in re.findall(r"[a-z]+", t) if w in DIGIT_NAMES) for t in texts]
        return F.one_hot(torch.tensor(labels), 10).float()

    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(100.0)


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory) -> Path:
    """120 held-out digits as PNG files in sub-folders zero ... nine (listed alphabetically: eight, five, ...)."""
    root = tmp_path_factory.mktemp("digits")
    for i, row in enumerate(digits("test").rows[:120]):
        folder = root / DIGIT_NAMES[row["label"]]
        folder.mkdir(exist_ok=True)
        row["image"].save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """An (untrained, randomly initialised) transformers CLIPModel folder as the CLIP recipe exports it."""
    from mmcontrast.hub.transformers_clip import export_transformers_clip
    from mmcontrast.recipe import build_parts

    run = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    recipe = load_recipe(RECIPE, [f"output_dir={run}", "data.limit=8", "eval.zero_shot=null"])
    return export_transformers_clip(build_parts(recipe).method, run / "model")


def _zero_shot_report(capsys, model: Path, data: str, classes: list[str] | None) -> dict:
    argv = ["zero-shot", "--model", str(model), "--data", data, "--templates", "a handwritten {}."]
    assert main([*argv, *(["--classes", *classes] if classes else [])]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.fixture()
def oracle(monkeypatch) -> OracleDualEncoder:
    encoder = OracleDualEncoder()
    monkeypatch.setattr("mmcontrast.hub.dual_encoders.load_dual_encoder", lambda folder: encoder)
    return encoder


@pytest.mark.parametrize("classes", [None, COUNTING_ORDER, SHUFFLED], ids=["folder-names", "counting", "shuffled"])
def test_cli_class_folder_matches_names_not_positions(oracle, class_folder, capsys, classes):
    report = _zero_shot_report(capsys, Path("unused"), str(class_folder), classes)
    assert report["zero_shot"]["top1"] == 1.0


def test_cli_same_metrics_with_and_without_classes_on_a_real_model(clip_folder, class_folder, tmp_path, capsys):
    without = _zero_shot_report(capsys, clip_folder, str(class_folder), None)
    counting = _zero_shot_report(capsys, clip_folder, str(class_folder), COUNTING_ORDER)
    shuffled = _zero_shot_report(capsys, clip_folder, str(class_folder), SHUFFLED)
    assert without["zero_shot"] == pytest.approx(counting["zero_shot"])
    assert without["zero_shot"] == pytest.approx(shuffled["zero_shot"])
    digits_counting = _zero_shot_report(capsys, clip_folder, "sklearn:digits", COUNTING_ORDER)
    digits_shuffled = _zero_shot_report(capsys, clip_folder, "sklearn:digits", SHUFFLED)
    assert digits_counting["zero_shot"] == pytest.approx(digits_shuffled["zero_shot"])


@pytest.mark.parametrize(
    ("classes", "problem"),
    [(COUNTING_ORDER[:9], "missing: ['nine']"), ([*COUNTING_ORDER[:9], "ten"], "not in the data: ['ten']")],
    ids=["count", "name"],
)
def test_cli_class_mismatch_names_both_lists(oracle, class_folder, capsys, classes, problem):
    argv = ["zero-shot", "--model", "unused", "--data", str(class_folder), "--classes", *classes]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--classes" in lines[0] and problem in lines[0]
    assert str(classes) in lines[0] and str(sorted(DIGIT_NAMES)) in lines[0]


def test_cli_images_alone_use_classes_as_the_label_list(oracle, class_folder, capsys):
    images = sorted(str(path) for path in class_folder.glob("*/*.png"))[:5]
    assert main(["zero-shot", "--model", "unused", "--classes", *SHUFFLED, "--images", *images]) == 0
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    assert [predictions[path].split()[0] for path in images] == [Path(path).parent.name for path in images]


@pytest.mark.parametrize("classes", [COUNTING_ORDER, SHUFFLED, None], ids=["counting", "shuffled", "none"])
def test_recipe_eval_classes_match_by_name(class_folder, tmp_path, classes):
    overrides = [f"output_dir={tmp_path}", f"eval.zero_shot={class_folder}", f"eval.classes={classes or 'null'}"]
    recipe = load_recipe(RECIPE, overrides)
    evaluator = _zero_shot(recipe)
    assert evaluator(OracleDualEncoder())["top1"] == 1.0


def test_recipe_eval_classes_mismatch_names_both_lists(class_folder, tmp_path):
    overrides = [f"output_dir={tmp_path}", f"eval.zero_shot={class_folder}", f"eval.classes={COUNTING_ORDER[:3]}"]
    recipe = load_recipe(RECIPE, overrides)
    with pytest.raises(ValueError, match=r"eval\.classes \['zero', 'one', 'two'\].*eval\.zero_shot") as raised:
        _zero_shot(recipe)
    assert str(sorted(DIGIT_NAMES)) in str(raised.value)


def test_classes_by_name():
    assert classes_by_name(None, ["b", "a"], classes_name="x", data_name="y") == (["b", "a"], [0, 1])
    assert classes_by_name(["a", "b", "c"], ["c", "a", "b"], classes_name="x", data_name="y") == (
        ["a", "b", "c"],
        [2, 0, 1],
    )
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        classes_by_name(["a", "a"], ["a", "b"], classes_name="x", data_name="y")
