"""The no-duplicates batch sampler: linear in the rows, one build per epoch, short batches warned about, batches of
a single row refused (finding 10 of issue 9)."""

from __future__ import annotations

import warnings

import pytest
import torch

from mmcontrast.data.samplers import NoDuplicatesBatchSampler


class CountedKey:
    """A text whose hashing is counted; past ``budget`` hashes in all it raises, so a quadratic sampler fails fast."""

    hashes = 0
    budget = 0

    def __init__(self, text: str) -> None:
        self.text = text

    def __hash__(self) -> int:
        CountedKey.hashes += 1
        if CountedKey.hashes > CountedKey.budget:
            raise RuntimeError(f"more than {CountedKey.budget} key hashes: the sampler is not linear in the rows")
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountedKey) and other.text == self.text

    def __repr__(self) -> str:
        return repr(self.text)


def _one_anchor_keys(shared: int, distinct: int) -> list[tuple[str, str]]:
    """``shared`` rows with the same anchor (and their own positives), then ``distinct`` rows of unique texts."""
    return [("the anchor", f"positive {i}") for i in range(shared)] + [
        (f"query {i}", f"document {i}") for i in range(distinct)
    ]


def _assert_no_repeats(batches: list[list[int]], keys: list[tuple[str, str]]) -> None:
    for batch in batches:
        texts = [text for row in batch for text in keys[row]]
        assert len(texts) == len(set(texts))


def test_many_positives_of_one_anchor_take_linear_work_and_one_build_per_epoch(monkeypatch):
    keys = _one_anchor_keys(4000, 4100)
    counted = [tuple(CountedKey(text) for text in row) for row in keys]
    CountedKey.hashes, CountedKey.budget = 0, 8 * 2 * len(keys)  # a few hashes per key and row, never per batch
    shuffles = []
    randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *args, **kwargs: shuffles.append(1) or randperm(*args, **kwargs))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = NoDuplicatesBatchSampler(counted, 8, seed=0)
        steps = len(sampler)
        batches = list(sampler)
        assert list(sampler) == batches
    assert len(shuffles) == 1, "the epoch's batches were built more than once"
    assert len(batches) == steps
    _assert_no_repeats(batches, keys)
    assert sorted(row for batch in batches for row in batch) == list(range(len(keys)))
    assert min(len(batch) for batch in batches) >= 2
    assert len(caught) == 1  # the short batches are reported once for the epoch
    sampler.set_epoch(1)
    with pytest.warns(UserWarning, match="epoch 1: "):
        assert list(sampler) != batches
    assert len(shuffles) == 2


def test_rows_that_would_sit_alone_in_a_batch_are_refused():
    keys = _one_anchor_keys(8000, 100)
    with pytest.raises(ValueError, match=r"8000 of 8100 rows share the text 'the anchor'.*single row") as error:
        sampler = NoDuplicatesBatchSampler(keys, 8, seed=0)
        list(sampler)
    assert "data.no_duplicates=false" in str(error.value) and "Deduplicate" in str(error.value)


def test_short_batches_are_warned_about_with_the_numbers_once_per_epoch():
    keys = _one_anchor_keys(10, 30)
    sampler = NoDuplicatesBatchSampler(keys, 8, seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = list(sampler)
            assert len(sampler) == len(batches)
        assert len(caught) == 1
        message = str(caught[0].message)
        assert f"epoch {epoch}: " in message
        assert f"of {len(batches)} batches hold fewer than the requested 8 rows" in message
        assert f"(the smallest {min(map(len, batches))})" in message
        assert "10 rows share the text 'the anchor'" in message
        assert min(len(batch) for batch in batches) >= 2  # every batch keeps an in-batch negative
        _assert_no_repeats(batches, keys)
        assert sorted(row for batch in batches for row in batch) == list(range(40))


def test_no_warning_without_duplicates():
    keys = _one_anchor_keys(0, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = list(NoDuplicatesBatchSampler(keys, 8, seed=2))
    assert [len(batch) for batch in batches] == [8] * 6 + [2]


def test_order_depends_on_seed_and_epoch_only():
    keys = _one_anchor_keys(12, 60)
    first, again = NoDuplicatesBatchSampler(keys, 8, seed=5), NoDuplicatesBatchSampler(keys, 8, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert list(first) == list(again)
        again.set_epoch(1)
        assert list(again) != list(first)
        first.set_epoch(1)
        assert list(first) == list(again)


def test_shards_slice_each_global_batch_and_drop_short_ones_with_a_warning():
    keys = _one_anchor_keys(20, 40)
    with pytest.warns(UserWarning, match=r"requested 8 rows \(4 per process x 2 processes\).*drop_last leaves out"):
        shards = [list(NoDuplicatesBatchSampler(keys, 4, seed=1, num_replicas=2, rank=rank)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) > 0
    whole = [a + b for a, b in zip(*shards, strict=True)]
    assert all(len(batch) == 8 for batch in whole)
    _assert_no_repeats(whole, keys)
    rows = [row for batch in whole for row in batch]
    assert len(rows) == len(set(rows))
