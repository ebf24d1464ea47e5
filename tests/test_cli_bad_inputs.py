"""Bad training inputs through `mmcontrast train`: tables broken on purpose, degenerate duplicates, out-of-range
scores and damaged checkpoints each end in exit 2 with one line on stderr that names the file (and line or key),
and no traceback. (Recipe keys and YAML: tests/test_config_ranges.py; eval / zero-shot: tests/test_cli_errors.py;
run folders and resume: tests/test_run_safety_cli.py.)"""

from __future__ import annotations

import pytest
from conftest import pairs_training_args, synthetic_pairs

from mmcontrast.cli import main


def _train(tiny_bert_path, data, output_dir, *extra) -> int:
    args = pairs_training_args(tiny_bert_path, data, output_dir)
    args = [a for a in args if not a.startswith("data.format=")]
    return main([*args, "train.max_steps=2", "train.batch_size=4", "train.progress_bar=false", *extra])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("mmcontrast train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


GOOD_ROWS = "".join(f"{a},{p}\n" for a, p in synthetic_pairs(12))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", b"", "empty.csv is empty"),
        ("header.csv", b"anchor,positive\n", "header.csv, line 1: a header (anchor, positive) and no rows"),
        ("latin1.csv", ("anchor,positive\n" + GOOD_ROWS + "caf\u00e9,cr\u00e8me\n").encode("latin-1"), "line 14"),
        ("ragged.csv", ("anchor,positive\n" + GOOD_ROWS + "a,b,c\n").encode(), "ragged.csv, line 14: 3 fields"),
        ("broken.jsonl", b'{"anchor": "a", "positive": "b"}\n{"anchor": \n', "broken.jsonl, line 2: not valid JSON"),
        ("object.json", b'{"anchor": ["a"], "positive": ["b"]}', "object.json, line 1: the file holds a JSON object"),
    ],
)
def test_broken_table_is_one_line_naming_file_and_line(tiny_bert_path, tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert _train(tiny_bert_path, path, tmp_path / "run") == 2
    line = _error_line(capsys)
    assert expected in line and name in line


def test_out_of_range_score_names_the_row_and_score_max(tiny_bert_path, tmp_path, capsys):
    path = tmp_path / "scored.csv"
    rows = [f"{a},{p},{4.0 if i != 5 else 7.5}" for i, (a, p) in enumerate(synthetic_pairs(12))]
    path.write_text("sentence1,sentence2,score\n" + "\n".join(rows) + "\n")
    extra = ["data.columns=[sentence1, sentence2]", "data.score_column=score", "data.score_max=5.0"]
    assert _train(tiny_bert_path, path, tmp_path / "run", *extra, "loss.name=cosine_similarity") == 2
    line = _error_line(capsys)
    assert "line 7" in line and "7.5" in line and "data.score_max" in line


def test_one_anchor_with_many_positives_is_refused_not_trained_at_zero_loss(tiny_bert_path, tmp_path, capsys):
    path = tmp_path / "one_anchor.csv"
    rows = [f"the same question,answer number {i}" for i in range(40)] + [f"{a},{p}" for a, p in synthetic_pairs(8)]
    path.write_text("anchor,positive\n" + "\n".join(rows) + "\n")
    assert _train(tiny_bert_path, path, tmp_path / "run") == 2
    line = _error_line(capsys)
    assert "data.no_duplicates=false" in line


def test_damaged_checkpoint_given_as_resume_from_names_the_file(tiny_bert_path, pairs_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_bert_path, pairs_csv, run, "train.save_steps=1") == 0
    checkpoint = run / "checkpoints" / "checkpoint-00000002"
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert _train(tiny_bert_path, pairs_csv, run, "train.save_steps=1", f"resume_from={checkpoint}") == 2
    line = _error_line(capsys)
    assert "model.safetensors has 100 bytes" in line and "checkpoint-00000001" in line
