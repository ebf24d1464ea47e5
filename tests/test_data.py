"""Data tables and batch samplers: bad rows named or skipped, STS-B layout, no duplicates, sharding."""

from __future__ import annotations

import pytest

from mmcontrast.data.samplers import NoDuplicatesBatchSampler, ShuffledBatchSampler
from mmcontrast.data.tables import clean_table, load_table


def _write(path, text):
    path.write_text(text)
    return path


def test_empty_text_row_is_named(tmp_path):
    path = _write(tmp_path / "pairs.csv", "anchor,positive\nhello,world\nfoo,\nbar,baz\n")
    table = load_table(str(path))
    with pytest.raises(ValueError, match=r"row 1: text column 'positive' is missing"):
        clean_table(table, ["anchor", "positive"], source=str(path))


def test_blank_text_row_is_named_in_jsonl(tmp_path):
    path = _write(
        tmp_path / "pairs.jsonl",
        '{"anchor": "a", "positive": "b"}\n{"anchor": "c", "positive": "d"}\n{"anchor": "   ", "positive": "e"}\n',
    )
    with pytest.raises(ValueError, match=r"row 2: text column 'anchor' is empty"):
        clean_table(load_table(str(path)), ["anchor", "positive"], source=str(path))


def test_missing_key_in_jsonl_row_is_named(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "c"}\n')
    with pytest.raises(ValueError, match=r"row 1: text column 'positive' is missing"):
        clean_table(load_table(str(path)), ["anchor", "positive"], source=str(path))


def test_bad_rows_can_be_skipped_and_counted(tmp_path):
    path = _write(tmp_path / "pairs.csv", "anchor,positive\nhello,world\nfoo,\n,x\nbar,baz\n")
    table, skipped = clean_table(load_table(str(path)), ["anchor", "positive"], skip_bad_rows=True)
    assert skipped == 2
    assert table["anchor"] == ["hello", "bar"]


def test_missing_column_lists_the_columns(tmp_path):
    path = _write(tmp_path / "pairs.csv", "query,doc\nhello,world\n")
    with pytest.raises(ValueError, match=r"column 'anchor' not found.*\['query', 'doc'\]"):
        clean_table(load_table(str(path)), ["anchor", "positive"])


def test_non_numeric_score_is_named(tmp_path):
    path = _write(tmp_path / "scored.tsv", "s1\ts2\tscore\na\tb\t0.5\nc\td\t\n")
    with pytest.raises(ValueError, match=r"row 1: score column 'score'"):
        clean_table(load_table(str(path)), ["s1", "s2"], score_column="score")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_table(str(tmp_path / "nope.csv"))


def test_stsb_layout(stsb_dir):
    train = load_table(str(stsb_dir / "sts-train.csv"), format="stsb")
    dev = load_table(str(stsb_dir / "sts-dev.csv"), format="stsb")
    assert (len(train), len(dev)) == (5749, 1500)
    assert train.column_names == ["sentence1", "sentence2", "score"]
    assert dev[0]["sentence1"] == "A man with a hard hat is dancing."
    assert all(0 <= s <= 5 for s in train["score"])
    high = load_table(str(stsb_dir / "sts-train.csv"), format="stsb", min_score=4.0)
    assert 0 < len(high) < len(train) and min(high["score"]) >= 4.0


def test_truncated_stsb_line_is_named(tmp_path):
    path = _write(tmp_path / "broken.csv", "g\tf\t2012\t0001\t4.0\tA man.\tA guy.\ng\tf\t2012\t0002\t3.0\tcut off\n")
    with pytest.raises(ValueError, match=r"line 2: expected at least 7"):
        load_table(str(path), format="stsb")


@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffled_batches_cover_rows_and_replay_by_epoch(drop_last):
    sampler = ShuffledBatchSampler(50, 8, seed=3, drop_last=drop_last)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    rows = [i for batch in first for i in batch]
    assert len(rows) == len(set(rows)) == (48 if drop_last else 50)
    assert len(first) == len(sampler)


def test_shards_cut_each_global_batch_into_equal_slices():
    whole = ShuffledBatchSampler(50, 12, seed=1, drop_last=True)
    shards = [ShuffledBatchSampler(50, 4, seed=1, num_replicas=3, rank=r) for r in range(3)]
    for step, batch in enumerate(whole):
        assert [b for s in shards for b in list(s)[step]] == batch
    assert all(len(s) == len(whole) == 4 for s in shards)


def test_no_duplicates_in_a_batch():
    keys = [("same question", f"answer {i}") for i in range(10)] + [(f"q{i}", f"a{i}") for i in range(30)]
    sampler = NoDuplicatesBatchSampler(keys, 8, seed=0)
    batches = list(sampler)
    for batch in batches:
        texts = [t for row in batch for t in keys[row]]
        assert len(texts) == len(set(texts))
    assert sorted(i for b in batches for i in b) == list(range(40))
    assert len(batches) == len(sampler)
