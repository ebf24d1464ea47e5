"""train.group_by_length: batches of similar token length, every row once per epoch, seeded and sharded."""

from __future__ import annotations

import random

import pytest

from mmcontrast.data.samplers import LengthGroupedBatchSampler, ShuffledBatchSampler
from mmcontrast.typed_config import ConfigError


def _lengths(rows: int = 1000, seed: int = 0) -> list[int]:
    generator = random.Random(seed)
    return [generator.randint(5, 120) for _ in range(rows)]


def _padded(batches: list[list[int]], lengths: list[int]) -> int:
    """Tokens a batch padded to its longest row costs, summed over the batches."""
    return sum(len(batch) * max(lengths[row] for row in batch) for batch in batches)


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_row_once_per_epoch_with_far_less_padding(drop_last):
    lengths = _lengths()
    grouped = LengthGroupedBatchSampler(lengths, 16, seed=3, drop_last=drop_last, window_batches=10)
    shuffled = ShuffledBatchSampler(len(lengths), 16, seed=3, drop_last=drop_last)
    batches = list(grouped)
    rows = [row for batch in batches for row in batch]
    assert len(rows) == len(set(rows)) == (992 if drop_last else 1000) and len(batches) == len(grouped)
    assert all(len(batch) == 16 for batch in batches[:62]) and (drop_last or len(batches[62]) == 8)
    # within one sorted window a batch spans a narrow length range; random batches span nearly all of 5..120
    assert _padded(batches, lengths) < 0.65 * _padded(list(shuffled), lengths)
    assert max(lengths[row] for row in batches[0]) == max(lengths)  # the longest batch first


def test_the_order_is_a_function_of_seed_and_epoch():
    lengths = _lengths()
    first, again, other_seed = (LengthGroupedBatchSampler(lengths, 8, seed=s) for s in (1, 1, 2))
    assert list(first) == list(again) and list(first) != list(other_seed)
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0  # a new shuffle, new batches
    first.set_epoch(0)
    assert list(first) == epoch0
    # the batch order after the longest is shuffled, not sorted by length
    maxima = [max(lengths[row] for row in batch) for batch in epoch0[1:]]
    assert maxima != sorted(maxima, reverse=True) and maxima != sorted(maxima)


def test_processes_split_each_grouped_batch():
    lengths = _lengths(500)
    ranks = [LengthGroupedBatchSampler(lengths, 8, seed=0, num_replicas=2, rank=r) for r in range(2)]
    global_batches = ranks[0].global_batches()
    for step, (zero, one) in enumerate(zip(*ranks, strict=True)):
        assert zero + one == global_batches[step] and not set(zero) & set(one)
    seen = [row for sampler in ranks for batch in sampler for row in batch]
    assert len(seen) == len(set(seen)) == 496  # the last incomplete global batch is dropped


def _sbert(tmp_path, tiny_bert_path, pairs_csv, *extra: str):
    from conftest import pairs_training_args

    from mmcontrast.recipe import build_parts, load_recipe

    arguments = [a for a in pairs_training_args(tiny_bert_path, pairs_csv, tmp_path) if "=" in a]
    return build_parts(load_recipe("recipes/sbert_pairs.yaml", [*arguments, "train.batch_size=8", *extra]))


def test_the_sbert_recipe_groups_its_rows_by_token_length(tmp_path, tiny_bert_path):
    generator = random.Random(0)
    words = ["red", "cat", "sits", "on", "a", "mat", "blue", "dog", "runs", "far"]
    lines = ["anchor,positive"]
    for i in range(96):  # texts of 2 to 30 words
        lines.append(",".join(" ".join(generator.choices(words, k=generator.randint(2, 30))) + f" {i}" for _ in "ab"))
    pairs_csv = tmp_path / "varied.csv"
    pairs_csv.write_text("\n".join(lines) + "\n")
    grouped = _sbert(tmp_path, tiny_bert_path, pairs_csv, "train.group_by_length=true", "data.no_duplicates=false")
    assert isinstance(grouped.batch_sampler, LengthGroupedBatchSampler)
    encoder, table = grouped.method.encoder, grouped.dataset
    expected = [
        max(len(encoder.tokenizer(text)["input_ids"]) for text in (row["anchor"], row["positive"])) for row in table
    ]
    assert grouped.batch_sampler.lengths == expected
    plain = _sbert(tmp_path, tiny_bert_path, pairs_csv, "data.no_duplicates=false")
    assert _padded(list(grouped.batch_sampler), expected) < _padded(list(plain.batch_sampler), expected)


def test_group_by_length_is_refused_where_it_cannot_apply(tmp_path, tiny_bert_path, pairs_csv):
    with pytest.raises(ConfigError, match=r"'train.group_by_length'.*no-duplicates rule"):
        _sbert(tmp_path, tiny_bert_path, pairs_csv, "train.group_by_length=true")  # info_nce: no duplicates
    from mmcontrast.recipe import build_parts, load_recipe

    clip = load_recipe("recipes/clip_digits.yaml", [f"output_dir={tmp_path}", "train.group_by_length=true"])
    with pytest.raises(ConfigError, match=r"'train.group_by_length' is true, but this recipe's rows have no text"):
        build_parts(clip)
