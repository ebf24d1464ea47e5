"""`mmcontrast mine-negatives`: every mined negative obeys the rank window, max score and margin, is never a positive
of its anchor nor the anchor itself; the top strategy mines what sentence-transformers' `mine_hard_negatives` mines;
the file the command writes trains the Sentence-BERT recipe with a hard-negative column."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from conftest import synthetic_pairs

from mmcontrast.cli import main
from mmcontrast.evaluation.hard_negatives import mine_hard_negatives

# texts on the unit circle: the cosine similarity of two texts is the cosine of the angle between them
ANGLES = {"anchor": 0, "positive": 10, "near": 5, "n20": 20, "n30": 30, "n45": 45, "n60": 60, "n90": 90, "n120": 120}


def _circle(texts):
    return torch.tensor([[math.cos(math.radians(ANGLES[t])), math.sin(math.radians(ANGLES[t]))] for t in texts])


def _mine(**options):
    corpus = ["positive", "near", "n20", "n30", "n30", "n45", "n60", "n90", "n120", "anchor"]
    mined = mine_hard_negatives(["anchor"], ["positive"], _circle, corpus=corpus, num_negatives=2, **options)
    return mined.negatives["anchor"]


def test_each_option_on_a_hand_built_corpus():
    """Ranks are over the corpus without the positive, the anchor itself and duplicates: near, n20, n30, n45, ..."""
    assert _mine() == ["near", "n20"]  # the most similar non-positives (near even beats the positive)
    assert _mine(range_min=1, range_max=3) == ["n20", "n30"]  # ranks 1 and 2
    assert _mine(max_score=math.cos(math.radians(25))) == ["n30", "n45"]
    assert _mine(margin=0.0) == ["n20", "n30"]  # at most the positive's score: near (5 degrees) is out
    positive = math.cos(math.radians(10))
    assert _mine(margin=positive - math.cos(math.radians(40))) == ["n45", "n60"]
    assert _mine(range_max=2, margin=0.0) == ["n20"]  # the window holds near and n20 and is not widened
    drawn = [_mine(sampling="random", seed=seed) for seed in range(20)]
    assert all(len(set(d)) == 2 and set(d) <= {"near", "n20", "n30", "n45", "n60", "n90", "n120"} for d in drawn)
    assert all(ANGLES[d[0]] < ANGLES[d[1]] for d in drawn)  # listed most similar first
    assert len({tuple(d) for d in drawn}) > 5 and drawn[3] == _mine(sampling="random", seed=3)


def test_filters_on_random_embeddings_match_a_brute_force_check():
    generator = torch.Generator().manual_seed(0)
    texts = [f"text {i}" for i in range(60)]
    table = dict(zip(texts, torch.randn(60, 8, generator=generator), strict=True))
    anchors = [texts[i % 20] for i in range(30)]  # anchors 0-9 have two positives
    positives = [texts[20 + i] for i in range(30)]
    anchors, positives = [*anchors, anchors[0]], [*positives, positives[0]]  # a duplicate row: one pair

    def encode(batch):
        return torch.stack([table[t] for t in batch])

    options = {"num_negatives": 3, "range_min": 2, "range_max": 15, "max_score": 0.5, "margin": 0.05}
    mined = mine_hard_negatives(anchors, positives, encode, corpus=texts, **options)

    def score(a, b):
        return float(torch.nn.functional.cosine_similarity(table[a], table[b], dim=0))

    assert len(mined.pairs) == 30 and len(mined.negatives) == 20
    for anchor, found in mined.negatives.items():
        own = {p for a, p in mined.pairs if a == anchor}
        ranking = sorted((t for t in texts if t not in own and t != anchor), key=lambda t: -score(anchor, t))
        lowest = min(score(anchor, p) for p in own)
        window = [t for t in ranking[2:15] if score(anchor, t) <= 0.5 and score(anchor, t) <= lowest - 0.05]
        assert found == window[:3], anchor  # top: the best candidates left in the window, in order
        for negative, value in zip(found, mined.negative_scores[anchor], strict=True):
            assert negative not in own and negative != anchor
            assert value == pytest.approx(score(anchor, negative), abs=1e-5)
    triplets = mined.rows("triplet")
    assert len(triplets["negative"]) == sum(len(mined.negatives[a]) for a, _ in mined.pairs)
    full = [(a, p) for a, p in mined.pairs if len(mined.negatives[a]) == 3]
    tuples = mined.rows("n-tuple", ("q", "d"))
    assert list(tuples) == ["q", "d", "negative_1", "negative_2", "negative_3"]
    assert list(zip(tuples["q"], tuples["d"], strict=True)) == full
    summary = mined.summary("n-tuple")
    assert (summary["rows_in"], summary["pairs"], summary["rows_out"]) == (31, 30, len(full))
    assert summary["anchors_short_of_negatives"] == sum(len(n) < 3 for n in mined.negatives.values())
    assert summary["removed_by_margin"] + summary["removed_by_max_score"] > 0


def test_top_strategy_matches_sentence_transformers(minilm_path, stsb_dir):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as theirs

    from mmcontrast.data.tables import load_table
    from mmcontrast.modalities.text import TextEncoder

    table = load_table(str(stsb_dir / "sts-dev.csv"), format="stsb", min_score=4.0, limit=40)
    # where an anchor's own text is in the corpus (another row's positive), sentence-transformers may mine the anchor
    # as its own negative and mmcontrast never does: those rows are left out of the comparison
    rows = [(a, p) for a, p in zip(table["sentence1"], table["sentence2"], strict=True) if a not in table["sentence2"]]
    pairs = Dataset.from_dict({"anchor": [a for a, _ in rows], "positive": [p for _, p in rows]})
    assert len(pairs) >= 30
    encoder = TextEncoder.from_pretrained(minilm_path)
    model = SentenceTransformer(minilm_path, device="cpu")
    for margin in (None, 0.1):
        ours = mine_hard_negatives(pairs["anchor"], pairs["positive"], encoder.encode, num_negatives=3, margin=margin)
        expected = theirs(
            pairs, model, num_negatives=3, absolute_margin=margin, range_max=len(pairs), verbose=False, batch_size=64
        )
        assert sorted(zip(*ours.rows("triplet").values(), strict=True)) == sorted(
            zip(expected["anchor"], expected["positive"], expected["negative"], strict=True)
        )


def test_command_writes_triplets_the_sbert_recipe_trains_on(tiny_bert_path, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"q": a, "d": p}) + "\n" for a, p in synthetic_pairs(40)))
    mined = tmp_path / "mined" / "triplets.csv"
    argv = ["--json", "mine-negatives", "--model", tiny_bert_path, "--data", str(pairs), "--columns", "q", "d"]
    argv += ["--output", str(mined), "--num-negatives", "2", "--range-min", "1", "--max-score", "0.999"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "distinct pairs" in captured.err  # the human summary goes to standard error
    with mined.open() as handle:
        rows = list(csv.DictReader(handle))
    assert summary["rows_out"] == len(rows) == 80 and summary["pairs"] == 40
    assert list(rows[0]) == ["q", "d", "negative"]
    assert all(row["negative"] not in (row["q"], row["d"]) for row in rows)
    assert summary["mean_negative_score"] <= 0.999

    run = tmp_path / "run"
    argv = ["--json", "train", "recipes/sbert_pairs.yaml", f"data.train={mined}", "data.columns=[q, d, negative]"]
    argv += [f"model.name_or_path={tiny_bert_path}", f"output_dir={run}", "train.max_steps=2", "train.batch_size=8"]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["global_step"] == 2


def test_command_errors_name_the_option(tiny_bert_path, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("anchor,positive\na cat,a kitten\na dog,a puppy\n")
    base = ["mine-negatives", "--model", tiny_bert_path, "--data", str(pairs)]
    assert main([*base, "--output", str(tmp_path / "out.txt")]) == 2
    assert "out.txt': give a file ending in .jsonl" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "o.csv"), "--range-min", "2", "--range-max", "3"]) == 2
    assert "range_min=2 and range_max=3 leave 1 ranks for 3 negatives" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "o.csv"), "--columns", "query", "positive"]) == 2
    assert "--data" in capsys.readouterr().err
