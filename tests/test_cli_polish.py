"""The command line's polish: --version, help without markup, the recipes shipped in the package (recipes list /
copy, and the build that installs them), --json (one JSON document on standard output, every other line on
standard error), recall@k next to open_clip's hit@k, and third-party warnings a run used to print."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import mmcontrast
from mmcontrast.cli import build_parser, main
from mmcontrast.evaluation.retrieval import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(path.stem for path in (ROOT / "recipes").glob("*.yaml"))


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"mmcontrast {mmcontrast.__version__}\n"


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_help_has_no_markup(capsys):
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    pages = [[], *([name] for name in commands), ["recipes", "list"], ["recipes", "copy"]]
    for argv in pages:
        text = _help(argv, capsys)
        assert text.startswith(f"usage: mmcontrast {' '.join(argv)}".rstrip()), argv
        for markup in ("`", "**", "](", "<!--"):
            assert markup not in text, (argv, markup)
    top = _help([], capsys)
    assert "--version" in top and "--json" in top and "mine-negatives" in top and "recipes" in top
    assert "train from a recipe" in _help(["train"], capsys)  # a command's own page says what it does


def test_recipes_list_names_describes_and_flags_outside_data(capsys):
    assert main(["recipes", "list"]) == 0
    captured = capsys.readouterr()
    lines = {line.split()[0]: line for line in captured.out.splitlines()}
    assert sorted(lines) == RECIPES
    assert (
        "Sentence-BERT on scored pairs (STS Benchmark): cosine-similarity regression of all-MiniLM-L6-v2."
        in (lines["sbert_stsb"])
    )
    assert "[needs: ../shared/data/stsb/sts-train.csv, ../shared/data/stsb/sts-dev.csv]" in lines["sbert_stsb"]
    assert "[needs: data.train]" in lines["sbert_pairs"]
    assert "needs" not in lines["clip_digits"]  # sklearn's digits come with scikit-learn
    assert "Barlow Twins (Zbontar et al. 2021) from scratch" in lines["barlow_twins_digits"]  # "al." ends nothing
    assert "recipes copy NAME" in captured.err

    assert main(["--json", "recipes", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["name"] for item in listed] == RECIPES
    assert all(item["description"].endswith(".") for item in listed)


def test_recipes_copy_writes_refuses_to_overwrite_and_suggests_names(tmp_path, capsys):
    assert main(["recipes", "copy", "sbert_pairs", str(tmp_path)]) == 0
    written = tmp_path / "sbert_pairs.yaml"
    assert written.read_bytes() == (ROOT / "recipes" / "sbert_pairs.yaml").read_bytes()
    assert "data.train" in capsys.readouterr().out  # says what the copy still needs
    written.write_text("edited")
    assert main(["recipes", "copy", "sbert_pairs.yaml", str(tmp_path)]) == 2
    assert "already exists: give --force" in capsys.readouterr().err
    assert written.read_text() == "edited"
    assert main(["--json", "recipes", "copy", "sbert_pairs", str(tmp_path), "--force"]) == 0
    copied = json.loads(capsys.readouterr().out)
    assert copied == {"recipe": "sbert_pairs", "path": str(written), "data": ["data.train"]}
    assert written.read_bytes() == (ROOT / "recipes" / "sbert_pairs.yaml").read_bytes()
    assert main(["recipes", "copy", "clip_digits", str(tmp_path / "mine.yaml")]) == 0  # a file name is the file
    assert (tmp_path / "mine.yaml").read_bytes() == (ROOT / "recipes" / "clip_digits.yaml").read_bytes()
    assert main(["recipes", "copy", "sbert_pair"]) == 2
    assert "did you mean sbert_pairs" in capsys.readouterr().err


def test_the_build_installs_the_recipes_inside_the_package(tmp_path):
    """setup.py + pyproject.toml put recipes/*.yaml in mmcontrast/bundled_recipes/ (what a wheel holds, build_py
    being the step that assembles it), and the installed package finds them there."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "mmcontrast", source / "mmcontrast", ignore=ignore)
    shutil.copytree(ROOT / "recipes", source / "recipes", ignore=ignore)
    built = tmp_path / "lib"
    command = [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(built)]
    subprocess.run(command, cwd=source, check=True, capture_output=True)
    bundled = built / "mmcontrast" / "bundled_recipes"
    assert sorted(path.stem for path in bundled.glob("*.yaml")) == RECIPES
    assert (bundled / "sbert_stsb.yaml").read_bytes() == (ROOT / "recipes" / "sbert_stsb.yaml").read_bytes()
    assert (built / "mmcontrast" / "cli.py").is_file() and (built / "mmcontrast" / "engine" / "trainer.py").is_file()
    probe = "from mmcontrast.recipe_files import recipes_folder, shipped_recipes; "
    probe += "print(recipes_folder()); print(len(shipped_recipes()))"
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(built)}, capture_output=True, text=True
    )
    assert found.stdout.split() == [str(bundled), str(len(RECIPES))], found.stderr


def test_json_train_keeps_stdout_for_the_result(tmp_path, capsys):
    """clip_digits prints an info line about its captions (on standard output without --json)."""
    argv = ["train", "recipes/clip_digits.yaml", "train.max_steps=1", "data.limit=64", "eval.zero_shot=null"]
    argv += ["train.progress_bar=false", f"output_dir={tmp_path / 'run'}"]
    assert main(["--json", *argv]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["global_step"] == 1
    assert "captions are generated from class names" in captured.err
    assert main([*argv, "overwrite_output_dir=true"]) == 0  # without --json: the info line, then the JSON
    out = capsys.readouterr().out
    assert out.startswith("data.train 'sklearn:digits': captions are generated")
    assert json.loads(out[out.index("\n{") :])["global_step"] == 1


def test_json_eval_and_the_option_after_the_command(tiny_bert_path, pairs_csv, capsys):
    for argv in (["--json", "eval", "retrieval"], ["eval", "retrieval", "--json"]):
        assert main([*argv, "--model", tiny_bert_path, "--data", str(pairs_csv), "--limit", "20"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert {"recall@1", "hit@1", "recall@10", "hit@10", "mrr@10", "ndcg@10"} <= set(metrics)
    assert main(["--json", "recipe-docs"]) == 2
    assert "--json does not apply to recipe-docs" in capsys.readouterr().err


def test_recall_and_hit_at_k_differ_as_documented():
    """Query 0 has 4 relevant documents and 1 of them in its top 2; query 1 has its one relevant document at rank 3."""
    corpus = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.1, 0.9], [0.2, 0.8]])
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # query 0 ranks 0, 1, 5, 4, 2, 3; query 1 ranks 2, 4, 5, 1, 0, 3
    relevant = [{1, 2, 3, 4}, {5}]
    metrics = retrieval_metrics(queries, corpus, relevant, ks=(1, 2, 3))
    assert metrics["recall@1"] == pytest.approx((0 / 4 + 0) / 2)
    assert metrics["recall@2"] == pytest.approx((1 / 4 + 0) / 2)
    assert metrics["hit@2"] == pytest.approx((1 + 0) / 2)
    assert metrics["recall@3"] == pytest.approx((1 / 4 + 1) / 2)
    assert metrics["hit@3"] == pytest.approx((1 + 1) / 2)
    assert metrics["hit@1"] == 0.0


def _warnings_of(argv: list[str]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    return [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, DeprecationWarning)]


def test_open_clip_export_warns_nothing(tmp_path):
    argv = ["train", "recipes/clip_open_clip_digits.yaml", "train.max_steps=1", "data.limit=64", "eval.zero_shot=null"]
    argv += ["train.progress_bar=false", f"output_dir={tmp_path / 'run'}"]
    assert _warnings_of(argv) == []


def test_clip_zero_shot_evaluation_warns_nothing(tmp_path):
    argv = ["train", "recipes/clip_digits.yaml", "train.max_steps=1", "data.limit=64", "train.progress_bar=false"]
    found = _warnings_of([*argv, f"output_dir={tmp_path / 'run'}"])
    assert found == []
