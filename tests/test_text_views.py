"""Text views: properties of each step, their rates, and per-row seeding through ViewsDataset(key="text")."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from mmcontrast.views import ViewsDataset
from mmcontrast.views.simclr import forked_cpu_rng
from mmcontrast.views.text import (
    Identity,
    TextViews,
    WordDeletion,
    WordMasking,
    WordSwap,
    dropout_views,
    text_transform,
)

SENTENCE = " ".join(f"w{i}" for i in range(12))  # distinct words, so positions can be told apart
ROWS = [{"text": f"sentence {i} " + " ".join(f"t{i}_{j}" for j in range(3 + i % 7)), "label": i} for i in range(10)]


def _is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(word in it for word in small)


def _keep_rows(batch: list[dict]) -> list[dict]:
    return batch


def test_deletion_keeps_order_subset_and_never_empties() -> None:
    words = SENTENCE.split()
    with forked_cpu_rng(0):
        for p in (0.1, 0.5, 0.9, 0.99):
            for _ in range(200):
                out = WordDeletion(p)(SENTENCE).split()
                assert 1 <= len(out) <= len(words)
                assert _is_subsequence(out, words)
        singles = [WordDeletion(0.99)("only") for _ in range(50)]
    assert singles == ["only"] * 50  # a one-word text can lose nothing
    assert WordDeletion(0.5)("") == "" and WordDeletion(0.5)("   ") == "   "


def test_deletion_keeps_a_random_word_when_all_dropped() -> None:
    with forked_cpu_rng(1):
        kept = Counter(WordDeletion(0.999)("a b c") for _ in range(600))
    assert set(kept) == {"a", "b", "c"}  # not always the first word
    assert min(kept.values()) > 120


def test_masking_keeps_length_and_only_masks() -> None:
    words = SENTENCE.split()
    with forked_cpu_rng(2):
        for _ in range(200):
            out = WordMasking(0.5, mask_token="<mask>")(SENTENCE).split()
            assert len(out) == len(words)
            assert all(o in (w, "<mask>") for o, w in zip(out, words, strict=True))
        assert "<mask>" in WordMasking(0.9, "<mask>")(SENTENCE)


def test_swap_is_a_permutation() -> None:
    words = SENTENCE.split()
    with forked_cpu_rng(3):
        for _ in range(200):
            one = WordSwap(1)(SENTENCE).split()
            assert sorted(one) == sorted(words)
            assert sum(a != b for a, b in zip(one, words, strict=True)) == 2  # two distinct positions exchanged
            many = WordSwap(5)(SENTENCE).split()
            assert Counter(many) == Counter(words)
        repeated = "a a b"
        assert Counter(WordSwap(3)(repeated).split()) == Counter(repeated.split())
    assert WordSwap(4)("alone") == "alone"


def test_zero_rates_are_identity_and_draw_nothing() -> None:
    text = "  spacing   is\tkept "
    state = torch.get_rng_state()
    assert WordDeletion(0.0)(text) == text
    assert WordMasking(0.0)(text) == text
    assert WordSwap(0)(text) == text
    assert torch.equal(torch.get_rng_state(), state)
    identity = text_transform()
    assert isinstance(identity, Identity) and identity(text) == text
    assert dropout_views()(text) == text


@pytest.mark.parametrize(("step", "p"), [(WordDeletion, 0.3), (WordMasking, 0.15)])
def test_rates_near_p(step, p) -> None:
    words = SENTENCE.split()
    total = changed = 0
    with forked_cpu_rng(4):
        for _ in range(2000):
            out = step(p)(SENTENCE).split()
            total += len(words)
            changed += len(words) - len(out) if step is WordDeletion else out.count("[MASK]")
    assert abs(changed / total - p) < 0.015  # 24k words: the standard error is ~0.003


def test_text_transform_order_and_composition() -> None:
    transform = text_transform(deletion=0.2, masking=0.3, swaps=2, mask_token="<mask>")
    assert isinstance(transform, TextViews)
    assert [type(step) for step in transform.steps] == [WordDeletion, WordSwap, WordMasking]
    assert transform.steps[2].mask_token == "<mask>"
    assert [type(step) for step in text_transform(masking=0.1).steps] == [WordMasking]
    words = set(SENTENCE.split())
    with forked_cpu_rng(5):
        for _ in range(100):
            out = transform(SENTENCE).split()
            assert 1 <= len(out) <= len(words) and set(out) <= words | {"<mask>"}
    assert pickle.loads(pickle.dumps(transform)) == transform  # DataLoader workers can receive it


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"deletion": 1.0}, "deletion"),
        ({"deletion": -0.1}, "deletion"),
        ({"masking": 1.5}, "masking"),
        ({"masking": float("nan")}, "masking"),
        ({"swaps": -1}, "swaps"),
        ({"swaps": 1.5}, "swaps"),
        ({"mask_token": "two words"}, "mask_token"),
        ({"mask_token": ""}, "mask_token"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name) -> None:
    with pytest.raises(ValueError, match=rf"text_transform: {name} must"):
        text_transform(**kwargs)


def test_bad_step_arguments() -> None:
    with pytest.raises(ValueError, match=r"WordDeletion: p must be a probability in \[0, 1\)"):
        WordDeletion(1.0)
    with pytest.raises(ValueError, match="WordMasking: p must"):
        WordMasking(-0.5)
    with pytest.raises(ValueError, match="WordMasking: mask_token must"):
        WordMasking(0.1, mask_token=" [MASK]")
    with pytest.raises(ValueError, match="WordSwap: swaps must"):
        WordSwap(-2)


def _views(dataset: ViewsDataset) -> list[list[str]]:
    return [dataset[i]["views"] for i in range(len(dataset))]


def test_views_dataset_text_is_seeded_per_row() -> None:
    transform = text_transform(deletion=0.3, swaps=1, masking=0.2)
    dataset = ViewsDataset(ROWS, transform, seed=7, key="text")
    row = dataset[3]
    assert set(row) == {"views", "label", "index"} and row["label"] == 3 and row["index"] == 3
    assert len(row["views"]) == 2 and all(isinstance(view, str) for view in row["views"])

    first = _views(dataset)
    assert _views(dataset) == first  # same (seed, epoch, index): same views
    assert _views(ViewsDataset(ROWS, transform, seed=7, key="text")) == first
    assert any(a != b for a, b in first)  # the two views of a row are drawn independently
    assert ViewsDataset(list(reversed(ROWS)), transform, seed=7, key="text")[6]["views"] != first[3]  # index seeds

    dataset.set_epoch(1)
    assert _views(dataset) != first
    dataset.set_epoch(0)
    assert _views(dataset) == first
    assert _views(ViewsDataset(ROWS, transform, seed=8, key="text")) != first

    torch.manual_seed(123)
    state = torch.get_rng_state()
    expected = torch.rand(4)
    torch.set_rng_state(state)
    _ = (dataset[0], dataset[5])
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert torch.equal(torch.rand(4), expected)


def test_views_dataset_text_same_in_workers() -> None:
    dataset = ViewsDataset(ROWS, text_transform(deletion=0.25, masking=0.25, swaps=2), seed=11, num_views=3, key="text")
    dataset.set_epoch(2)
    in_process = {i: dataset[i]["views"] for i in range(len(dataset))}
    loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2, collate_fn=_keep_rows)
    seen = {row["index"]: row["views"] for batch in loader for row in batch}
    assert seen == in_process


def test_views_dataset_dropout_views() -> None:
    rows = [{"text": "a sentence embedded twice"}]
    assert ViewsDataset(rows, dropout_views(), key="text")[0]["views"] == ["a sentence embedded twice"] * 2


def test_views_dataset_missing_key_names_it() -> None:
    dataset = ViewsDataset([{"sentence": "no text field"}], text_transform(), key="text")
    with pytest.raises(KeyError, match=r"has no 'text'.*sentence"):
        dataset[0]
    with pytest.raises(KeyError, match="has no 'image'"):
        ViewsDataset([{"text": "x"}], text_transform())[0]  # the default key is still "image"
    with pytest.raises(ValueError, match="num_views must be >= 2"):
        ViewsDataset(ROWS, text_transform(), num_views=1, key="text")
