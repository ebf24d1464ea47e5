"""Multi-dataset training: the batch sampler draws every batch from one source (round robin or in proportion to
the sources' sizes, seeded by (seed, epoch), sharded across processes), and a Sentence-BERT recipe with two
datasets of different columns and losses trains with each batch scored by its own dataset's loss."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
import torch
from conftest import synthetic_pairs

from mmcontrast.cli import main
from mmcontrast.data.multi_source import MultiSourceDataset
from mmcontrast.data.samplers import MultiSourceBatchSampler, NoDuplicatesBatchSampler, ShuffledBatchSampler
from mmcontrast.losses import cosine_similarity_loss, info_nce
from mmcontrast.recipe import build_parts, load_recipe


def _sampler(sizes, batch_size, strategy, seed=0, num_replicas=1, rank=0):
    samplers = [
        ShuffledBatchSampler(size, batch_size, seed=seed, num_replicas=num_replicas, rank=rank) for size in sizes
    ]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    return MultiSourceBatchSampler(samplers, offsets, strategy, seed=seed), offsets


def _source_of(batch, sizes):
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    sources = {next(i for i in range(len(sizes)) if offsets[i] <= row < offsets[i + 1]) for row in batch}
    assert len(sources) == 1, f"batch {batch} mixes sources {sources}"
    return sources.pop()


@pytest.mark.parametrize(("sizes", "expected"), [((10, 25), [0, 1] * 3), ((25, 10), [0, 1] * 3 + [0])])
def test_round_robin_alternates_and_stops_at_the_first_exhausted_source(sizes, expected):
    sampler, _ = _sampler(sizes, 4, "round_robin")
    batches = list(sampler)
    assert [_source_of(batch, sizes) for batch in batches] == expected == sampler.source_order()
    assert len(sampler) == len(expected)
    rows = [row for batch in batches for row in batch]
    assert len(rows) == len(set(rows))  # no row twice in an epoch


def test_proportional_uses_every_batch_once_and_draws_sources_by_size():
    sizes = (12, 28)  # 3 and 7 batches of 4
    sampler, _ = _sampler(sizes, 4, "proportional", seed=5)
    first_steps = Counter()
    orders = set()
    for epoch in range(600):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        sources = [_source_of(batch, sizes) for batch in batches]
        assert Counter(sources) == {0: 3, 1: 7}  # every batch of every source, once
        assert sorted(row for batch in batches for row in batch) == list(range(40))
        first_steps[sources[0]] += 1
        orders.add(tuple(sources))
    # the source of a step is drawn in proportion to the sources' sizes: 3/10 and 7/10 at the first step
    assert first_steps[0] / 600 == pytest.approx(0.3, abs=0.06)
    assert len(orders) > 50  # the order is shuffled per epoch


def test_order_is_a_function_of_seed_and_epoch():
    one, _ = _sampler((12, 28), 4, "proportional", seed=3)
    two, _ = _sampler((12, 28), 4, "proportional", seed=3)
    one.set_epoch(4)
    two.set_epoch(4)
    assert list(one) == list(two)  # a resumed run replays the same batches
    two.set_epoch(5)
    assert list(one) != list(two)


@pytest.mark.parametrize("strategy", ["round_robin", "proportional"])
def test_two_processes_take_the_same_source_and_disjoint_rows(strategy):
    sizes = (30, 50)
    ranks = [_sampler(sizes, 4, strategy, seed=1, num_replicas=2, rank=rank)[0] for rank in (0, 1)]
    for epoch in (0, 1):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        steps = list(zip(*(list(sampler) for sampler in ranks), strict=True))
        assert len(steps) == len(ranks[0]) == len(ranks[1]) > 0
        seen = []
        for batch0, batch1 in steps:
            assert len(batch0) == len(batch1) == 4
            assert _source_of(batch0, sizes) == _source_of(batch1, sizes)  # one source per global batch
            seen += batch0 + batch1
        assert len(seen) == len(set(seen))  # no row twice in an epoch across the ranks


def test_works_with_the_no_duplicates_sampler_and_the_dataset_offsets():
    first = [("a", "b"), ("a", "c"), ("d", "e"), ("f", "g")]
    second = [{"text": f"t{i}"} for i in range(6)]
    dataset = MultiSourceDataset([first, second])
    samplers = [NoDuplicatesBatchSampler(first, 2, seed=0), ShuffledBatchSampler(len(second), 3, seed=0)]
    sampler = MultiSourceBatchSampler(samplers, dataset.offsets, "proportional")
    for batch in sampler:
        items = [dataset[i] for i in batch]
        assert len({source for source, _ in items}) == 1
        if items[0][0] == 0:
            texts = [text for _, row in items for text in row]
            assert len(texts) == len(set(texts))  # the source's own rule holds
    assert dataset[5] == (1, {"text": "t1"}) and len(dataset) == 10


def _write_csv(path, header, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def two_datasets(tmp_path):
    """(query, answer) pairs for info_nce; (left, right, similarity) scored pairs for cosine_similarity."""
    pairs = _write_csv(tmp_path / "qa.csv", ["query", "answer"], synthetic_pairs(24, seed=1))
    scored = [(a, b, i % 5) for i, (a, b) in enumerate(synthetic_pairs(40, seed=2))]
    scores = _write_csv(tmp_path / "scored.csv", ["left", "right", "similarity"], scored)
    return pairs, scores


def _overrides(model, pairs, scores, sampler="round_robin"):
    qa = f"{{train: {pairs}, columns: [query, answer], prompts: {{query: q}}}}"
    sts = (
        f"{{train: {scores}, columns: [left, right], score_column: similarity, score_max: 4.0, "
        "loss: {name: cosine_similarity}}"
    )
    return [
        f"model.name_or_path={model}",
        f"data.multi_dataset_sampler={sampler}",
        f"data.datasets={{qa: {qa}, sts: {sts}}}",
        'model.prompts={q: "question: "}',
        "train.batch_size=8",
    ]


def test_each_batch_is_scored_by_its_own_dataset_loss(tiny_bert_path, two_datasets):
    recipe = load_recipe("recipes/sbert_pairs.yaml", _overrides(tiny_bert_path, *two_datasets))
    parts = build_parts(recipe)
    method, dataset, sampler = parts.method, parts.dataset, parts.batch_sampler
    assert len(dataset) == 64 and dataset.offsets == [0, 24]
    sampler.set_epoch(0)
    batches = list(sampler)
    assert [int(batch[0] >= 24) for batch in batches] == [0, 1, 0, 1, 0, 1]  # round robin; qa has 3 batches
    torch.manual_seed(0)
    method.eval()  # no dropout: the two computations below see the same embeddings
    for batch_rows in batches[:2]:
        batch = method.collate([dataset[i] for i in batch_rows])
        embeddings = method.embed(batch)
        loss = method.loss(embeddings, batch).loss
        if batch["source"] == 0:
            assert set(embeddings) == {"query", "answer"}
            expected = info_nce(embeddings["query"], embeddings["answer"], scale=20.0)
            rows = [dataset[i][1] for i in batch_rows]
            prompted = method.encoder.preprocess(
                [f"question: {r['query']}" for r in rows] + [r["answer"] for r in rows]
            )
            assert torch.equal(batch["features"]["input_ids"], prompted["input_ids"])  # this source's prompts
        else:
            assert set(embeddings) == {"left", "right"}
            expected = cosine_similarity_loss(embeddings["left"], embeddings["right"], batch["scores"])
            assert batch["scores"].max() <= 1.0  # this source's score_max
        torch.testing.assert_close(loss, expected)


def test_mixed_batch_is_refused(tiny_bert_path, two_datasets):
    parts = build_parts(load_recipe("recipes/sbert_pairs.yaml", _overrides(tiny_bert_path, *two_datasets)))
    with pytest.raises(ValueError, match=r"mixes rows of the sources \['qa', 'sts'\]"):
        parts.method.collate([parts.dataset[0], parts.dataset[30]])


def test_train_and_datasets_together_are_refused(tiny_bert_path, two_datasets):
    overrides = [*_overrides(tiny_bert_path, *two_datasets), f"data.train={two_datasets[0]}"]
    with pytest.raises(ValueError, match=r"data.train and data.datasets are both set"):
        build_parts(load_recipe("recipes/sbert_pairs.yaml", overrides))


def test_bad_source_names_its_key(tiny_bert_path, two_datasets):
    overrides = [*_overrides(tiny_bert_path, *two_datasets), "data.datasets.sts.loss.name=cosent"]
    overrides.append("data.datasets.sts.score_column=null")
    with pytest.raises(ValueError, match=r"data.datasets.sts: loss 'cosent' needs a score"):
        build_parts(load_recipe("recipes/sbert_pairs.yaml", overrides))


def test_two_datasets_train_in_one_run(tiny_bert_path, two_datasets, tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "recipes/sbert_pairs.yaml",
        *_overrides(tiny_bert_path, *two_datasets, sampler="proportional"),
        f"output_dir={run}",
        "train.max_steps=4",
        "train.progress_bar=false",
    ]
    assert main(args) == 0
    assert json.loads((run / "summary.json").read_text())["global_step"] == 4
    card = (run / "model" / "README.md").read_text()
    assert "loss `info_nce` on" in card and "loss `cosine_similarity` on" in card


@pytest.mark.slow
def test_resumed_run_replays_the_same_batches(tiny_bert_path, two_datasets, tmp_path):
    """Two datasets, proportional batches over two epochs: resuming from the step-4 checkpoint ends with exactly
    the parameters of the uninterrupted run (the order is a function of seed and epoch)."""
    from safetensors.torch import load_file

    def train(output_dir, *extra):
        args = [
            "train",
            "recipes/sbert_pairs.yaml",
            *_overrides(tiny_bert_path, *two_datasets, sampler="proportional"),
            f"output_dir={output_dir}",
            "train.max_steps=10",  # 8 batches per epoch: the run crosses into the second epoch
            "train.save_steps=4",
            "train.lr=1e-3",
            "train.progress_bar=false",
            *extra,
        ]
        assert main(args) == 0

    train(tmp_path / "reference")
    checkpoint = sorted((tmp_path / "reference" / "checkpoints").glob("checkpoint-*"))[0]
    assert int(checkpoint.name.split("-")[1]) == 4
    train(tmp_path / "resumed", f"resume_from={checkpoint}")
    expected = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    actual = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name
    initial = load_file(f"{tiny_bert_path}/model.safetensors")
    assert sum(not torch.equal(expected[n], initial[n]) for n in expected if n in initial) > len(expected) // 2
