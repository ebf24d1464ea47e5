"""The one-tower methods (MoCo v2 / v3, BYOL, SimSiam, Barlow Twins, VICReg, SupCon, memory bank, SimCLR's DCL and
InfoNCE forms) against manual re-computations of their losses from the papers' pseudo-code; their momentum state
(EMA targets on the cosine schedule, the queue, the memory bank) moved exactly as the papers do after the optimizer
step, under gradient accumulation too; queue and bank identical on every process; text views (SimCSE); the heads as
the papers build them; and the recipe refusing another method's settings by key."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from test_losses_distributed import free_port
from torch import nn

from mmcontrast.losses import barlow_twins, binary_nce, dcl, supcon, vicreg
from mmcontrast.methods.bootstrap import BYOL, SimSiam
from mmcontrast.methods.memory_bank import MemoryBankNCE, noise_seed
from mmcontrast.methods.moco import MoCo
from mmcontrast.methods.redundancy import BarlowTwins, VICReg
from mmcontrast.methods.simclr import SimCLR
from mmcontrast.methods.supcon import SupCon
from mmcontrast.methods.views import normalised_std
from mmcontrast.modalities.heads import MLPHead

B, D = 6, 8


def encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16))


def rows(count: int = B, views: int = 2, seed: int = 1) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {"views": [torch.randn(3, 4, 4, generator=generator) for _ in range(views)], "label": i % 3, "index": i}
        for i in range(count)
    ]


def flat_views(batch: dict) -> torch.Tensor:
    """The views of a collated batch, view-major, as the methods embed them."""
    values = batch["pixel_values"]
    return values.transpose(0, 1).reshape(-1, *values.shape[2:])


def ce(logits: torch.Tensor, target: int) -> torch.Tensor:
    return -torch.log_softmax(logits, dim=0)[target]


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


# ---------------------------------------------------------------- losses against the papers' pseudo-code


def test_moco_v2_loss_is_each_query_against_its_key_and_the_queue():
    method = MoCo(encoder(), MLPHead(16, D), queue_size=5, temperature=0.2, momentum=0.99, symmetric=False)
    method.queue.enqueue(F.normalize(torch.randn(4, D), dim=1))
    batch = method.collate(rows())
    queries = method(batch, embed_only=True)["queries"]
    keys = method.target(flat_views(batch)).reshape(2, B, D).transpose(0, 1)
    queue = method.queue.negatives()
    expected = torch.stack(
        [
            ce(torch.cat([(unit(q) @ unit(k)).reshape(1), F.normalize(queue, dim=1) @ unit(q)]) / 0.2, 0)
            for q, k in zip(queries[:, 0], keys[:, 1], strict=True)
        ]
    ).mean()
    assert torch.allclose(method(batch).loss, expected, atol=1e-6)


def test_moco_v3_loss_is_two_tau_times_the_symmetric_infonce_over_the_batch_keys():
    head = MLPHead(16, D, 12, True, num_layers=3, output_batch_norm=True)
    method = MoCo(encoder(), head, MLPHead(D, D, 12, True, output_batch_norm=True), version=3, temperature=0.5)
    batch = method.collate(rows())
    queries = method(batch, embed_only=True)["queries"]
    keys = method.target(flat_views(batch)).reshape(2, B, D).transpose(0, 1)
    q, k = F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)
    terms = [ce(q[i, a] @ k[:, b].T / 0.5, i) for a, b in ((0, 1), (1, 0)) for i in range(B)]
    expected = 2 * 0.5 * (torch.stack(terms[:B]).mean() + torch.stack(terms[B:]).mean())
    assert torch.allclose(method(batch).loss, expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["byol", "simsiam"])
def test_bootstrap_loss_and_its_gradient_reach_the_online_branch_only(kind):
    projector, predictor = MLPHead(16, D, 12, True), MLPHead(D, D, 12, True)
    if kind == "byol":
        method = BYOL(encoder(), projector, predictor, momentum=0.9)
    else:
        method = SimSiam(encoder(), projector, predictor)
    batch = method.collate(rows())
    embeddings = method(batch, embed_only=True)
    p = embeddings["predictions"]
    if kind == "byol":
        target = method.target(flat_views(batch)).reshape(2, B, D).transpose(0, 1)
    else:
        target = embeddings["projections"].detach()
    expected = -0.5 * (
        F.cosine_similarity(p[:, 0], target[:, 1]).mean() + F.cosine_similarity(p[:, 1], target[:, 0]).mean()
    )
    loss = method(batch, embeddings=embeddings).loss
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in method.predictor.parameters())
    if kind == "byol":
        assert all(p.grad is None and not p.requires_grad for p in method.target.parameters())


def test_barlow_twins_and_vicreg_methods_are_their_losses_on_the_projections():
    for cls, fn in ((BarlowTwins, barlow_twins), (VICReg, vicreg)):
        method = cls(encoder(), MLPHead(16, D, 12, True, num_layers=3), gather=False)
        batch = method.collate(rows(views=3))
        z = method(batch, embed_only=True)["projections"]
        expected = (fn(z[:, 0], z[:, 1]) + fn(z[:, 0], z[:, 2]) + fn(z[:, 1], z[:, 2])) / 3
        assert torch.allclose(method(batch).loss, expected, atol=1e-5)


@pytest.mark.parametrize("loss", ["dcl", "dclw", "info_nce"])
def test_simclr_other_losses(loss):
    method = SimCLR(encoder(), MLPHead(16, D), loss=loss, temperature=0.3, gather=False)
    batch = method.collate(rows())
    z = method(batch, embed_only=True)["projections"]
    a, b = F.normalize(z[:, 0], dim=-1), F.normalize(z[:, 1], dim=-1)
    if loss == "info_nce":
        expected = torch.stack([ce(a[i] @ b.T / 0.3, i) for i in range(B)]).mean()
    else:
        expected = dcl(z[:, 0], z[:, 1], temperature=0.3, weight_sigma=0.5 if loss == "dclw" else None)
    assert torch.allclose(method(batch).loss, expected, atol=1e-6)


def test_supcon_uses_the_labels_and_refuses_a_batch_without_them():
    method = SupCon(encoder(), MLPHead(16, D), temperature=0.1)
    batch = method.collate(rows())
    z = method(batch, embed_only=True)["projections"]
    assert torch.allclose(method(batch).loss, supcon(z, batch["labels"], temperature=0.1), atol=1e-6)
    # the manual L_out: views of one label are positives
    views, labels = F.normalize(z.reshape(-1, D), dim=-1), batch["labels"].repeat_interleave(2)
    terms = []
    for i in range(len(views)):
        others = [j for j in range(len(views)) if j != i]
        log_prob = torch.log_softmax(views[i] @ views[others].T / 0.1, dim=0)
        positives = [n for n, j in enumerate(others) if labels[j] == labels[i]]
        terms.append(-log_prob[positives].mean())
    assert torch.allclose(method(batch).loss, torch.stack(terms).mean(), atol=1e-5)
    unlabelled = method.collate([{k: v for k, v in row.items() if k != "label"} for row in rows()])
    with pytest.raises(ValueError, match="SupCon: the batch has no labels"):
        method(unlabelled)


def test_memory_bank_loss_is_binary_nce_against_the_bank_and_its_seeded_noise():
    method = MemoryBankNCE(encoder(), nn.Linear(16, D), num_data=20, negatives=7, temperature=0.1, seed=3)
    batch = method.collate(rows())
    embeddings = method(batch, embed_only=True)
    first = method(batch, embeddings=embeddings).loss
    z_estimate = float(method.nce.normaliser)
    assert z_estimate > 0 and int(method.draws) == 1
    # the same draw again: the same noise, the same Z (estimated once)
    method.draws.zero_()
    generator = torch.Generator().manual_seed(noise_seed(3, 0, 0))
    noise = method.bank.memory[torch.randint(0, 20, (B, 7), generator=generator)]
    positives = method.bank.memory[batch["indices"]]
    z = embeddings["projections"]
    options = {"temperature": 0.1, "normaliser": z_estimate, "num_data": 20}
    expected = (binary_nce(z[:, 0], positives, noise, **options) + binary_nce(z[:, 1], positives, noise, **options)) / 2
    assert torch.allclose(method(batch, embeddings=embeddings).loss, expected, atol=1e-6)
    assert torch.allclose(first, expected, atol=1e-6)
    assert float(method.nce.normaliser) == z_estimate


# ---------------------------------------------------------------- momentum state after the optimizer step


def test_byol_target_follows_the_cosine_schedule_exactly():
    method = BYOL(encoder(), MLPHead(16, D, 12, True), MLPHead(D, D, 12, True), momentum=0.9)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    total = 4
    for step in range(1, total + 1):
        before = {n: p.detach().clone() for n, p in method.target.named_parameters()}
        method(method.collate(rows(seed=step))).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        method.after_optimizer_step(step, total)
        m = 1 - (1 - 0.9) * (math.cos(math.pi * step / total) + 1) / 2
        online = dict(method.encoder.named_parameters()) | {f"h{n}": p for n, p in method.head.named_parameters()}
        for name, value in method.target.named_parameters():
            source = online[name.removeprefix("encoder.")] if name.startswith("encoder.") else online[f"h{name[5:]}"]
            assert torch.allclose(value, m * before[name] + (1 - m) * source.detach(), atol=1e-7), name
    assert method.last_momentum == pytest.approx(1.0)  # the schedule ends at 1


def test_moco_v2_enqueues_every_micro_batch_key_after_the_step_then_moves_the_key_encoder():
    method = MoCo(encoder(), MLPHead(16, D), queue_size=50, momentum=0.99, symmetric=True)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    first, second = method.collate(rows(seed=1)), method.collate(rows(seed=2))
    method.queue.enqueue(F.normalize(torch.randn(3, D), dim=1))  # some negatives, so the loss has a gradient
    keys = []
    for batch in (first, second):  # two micro-batches of one optimizer step
        keys.append(method.target(flat_views(batch)).reshape(2, B, D).transpose(0, 1))
        method(batch).loss.backward()
    assert int(method.queue.filled) == 3  # nothing enqueued before the step
    optimizer.step()
    target_before = [p.detach().clone() for p in method.target.parameters()]
    method.after_optimizer_step(1, 10)
    expected = F.normalize(torch.cat([keys[0][:, 0], keys[0][:, 1], keys[1][:, 0], keys[1][:, 1]]), dim=1)
    assert torch.allclose(method.queue.negatives()[3:], expected, atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(target_before, method.target.parameters(), strict=True))
    method.eval()
    method(first)  # evaluation forward passes enqueue nothing
    method.after_optimizer_step(2, 10)
    assert int(method.queue.filled) == 3 + 4 * B


def test_memory_bank_update_after_the_step():
    method = MemoryBankNCE(encoder(), nn.Linear(16, D), num_data=20, negatives=5, momentum=0.5)
    batch = method.collate(rows())
    z = F.normalize(method(batch, embed_only=True)["projections"].detach(), dim=-1).mean(dim=1)
    before = method.bank.memory.clone()
    method(batch).loss.backward()
    assert torch.equal(method.bank.memory, before)
    method.after_optimizer_step(1, 10)
    expected = F.normalize(0.5 * before[batch["indices"]] + 0.5 * F.normalize(z, dim=-1), dim=1)
    assert torch.allclose(method.bank.memory[batch["indices"]], expected, atol=1e-6)
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[batch["indices"]] = False
    assert torch.equal(method.bank.memory[untouched], before[untouched])


def test_momentum_state_is_in_the_state_dict():
    moco = MoCo(encoder(), MLPHead(16, D), queue_size=10)
    keys = moco.state_dict().keys()
    assert {"queue.keys", "queue.position", "queue.filled"} <= keys and any(
        k.startswith("target.encoder.") for k in keys
    )
    bank = MemoryBankNCE(encoder(), nn.Linear(16, D), num_data=20)
    assert {"bank.memory", "nce.normaliser", "draws"} <= bank.state_dict().keys()


# ---------------------------------------------------------------- several processes


def _distributed_worker(rank: int, world_size: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        moco = MoCo(encoder(), MLPHead(16, D), queue_size=100, momentum=0.9, symmetric=True)
        bank = MemoryBankNCE(encoder(), nn.Linear(16, D), num_data=4 * B, negatives=5)
        mine = rows(seed=10 + rank)
        for row in mine:
            row["index"] += rank * B  # each rank's own examples
        for method in (moco, bank):
            method(method.collate(mine)).loss.backward()
            method.after_optimizer_step(1, 10)
        results[rank] = (moco.queue.negatives().clone(), bank.bank.memory.clone())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_queue_and_bank_are_the_same_on_every_process_and_equal_one_process(world_size):
    results = mp.Manager().dict()
    mp.spawn(_distributed_worker, args=(world_size, free_port(), results), nprocs=world_size)
    queues, banks = zip(*(results[r] for r in range(world_size)), strict=True)
    assert all(torch.equal(queues[0], q) for q in queues) and all(torch.equal(banks[0], b) for b in banks)
    # one process, the ranks' rows in rank order: the keys and bank updates of the concatenated batch
    torch.manual_seed(0)
    moco = MoCo(encoder(), MLPHead(16, D), queue_size=100, momentum=0.9, symmetric=True)
    per_rank = [rows(seed=10 + r) for r in range(world_size)]
    keys = [moco.target(flat_views(moco.collate(r))).reshape(2, B, D).transpose(0, 1) for r in per_rank]
    expected = F.normalize(torch.cat([torch.cat([k[:, 0] for k in keys]), torch.cat([k[:, 1] for k in keys])]), dim=1)
    assert torch.allclose(queues[0], expected, atol=1e-6)
    assert int((banks[0] != MemoryBankNCE(encoder(), nn.Linear(16, D), num_data=4 * B).bank.memory).any(1).sum()) == (
        world_size * B
    )


# ---------------------------------------------------------------- text views, heads, collapse metric


def test_simcse_dropout_views_differ_in_train_mode_only(tiny_bert_path):
    from mmcontrast.modalities.text import TextEncoder
    from mmcontrast.views import ViewsDataset
    from mmcontrast.views.text import dropout_views

    text = TextEncoder.from_pretrained(tiny_bert_path)
    method = SimCLR(text, nn.Identity(), loss="info_nce", temperature=0.05, gather=False)
    sentences = [{"text": s} for s in ("a red cube", "two blue spheres on a table", "the small dog runs")]
    dataset = ViewsDataset(sentences, dropout_views(), key="text")
    batch = method.collate([dataset[i] for i in range(3)])
    assert batch["features"]["input_ids"].shape[0] == 6 and batch["num_views"] == 2
    assert torch.equal(batch["features"]["input_ids"][:3], batch["features"]["input_ids"][3:])  # view-major
    method.train()
    z = method(batch, embed_only=True)["projections"]
    assert not torch.allclose(z[:, 0], z[:, 1])  # dropout masks differ
    loss = method(batch).loss
    loss.backward()
    assert loss > 0 and text.transformer.embeddings.word_embeddings.weight.grad is not None
    method.eval()
    with torch.no_grad():
        z = method(batch, embed_only=True)["projections"]
    assert torch.allclose(z[:, 0], z[:, 1], atol=1e-6)


def test_heads_as_the_papers_build_them():
    simsiam = MLPHead(16, 8, 12, True, num_layers=3, output_batch_norm=True)
    kinds = [type(m).__name__ for m in simsiam]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert not simsiam[-1].affine and simsiam[-2].bias is None and simsiam[0].bias is None
    moco_v2 = MLPHead(16, 8)
    assert [type(m).__name__ for m in moco_v2] == ["Linear", "ReLU", "Linear"] and moco_v2[0].bias is not None
    with pytest.raises(ValueError, match="num_layers must be >= 2"):
        MLPHead(16, 8, num_layers=1)


def test_normalised_std_is_zero_when_collapsed_and_near_one_over_sqrt_d_when_spread():
    assert float(normalised_std(torch.ones(100, 64))) == pytest.approx(0.0, abs=1e-7)
    assert float(normalised_std(torch.randn(20000, 64))) == pytest.approx(1 / 8, rel=0.02)


# ---------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    ("recipe", "override", "message"),
    [
        ("moco_digits", "model.byol.momentum=0.9", "model.byol: not a setting of method 'moco'"),
        ("byol_digits", "model.loss=dcl", "model.loss: not a setting of method 'byol'"),
        ("simclr_digits", "model.predictor.out_dim=8", "model.predictor: not a setting of method 'simclr'"),
        ("byol_digits", "model.predictor=null", "model.predictor is not set"),
        ("vicreg_digits", "model.temperature=0.1", "model.temperature: not a setting of method 'vicreg'"),
        ("dcl_digits", "model.loss_chunk_size=64", "model.loss_chunk_size: not a setting"),
    ],
)
def test_recipes_refuse_another_methods_settings_by_key(recipe, override, message):
    from mmcontrast.recipe import build_parts, load_recipe

    loaded = load_recipe(f"recipes/{recipe}.yaml", [override, "eval.train=null", "data.limit=8"])
    with pytest.raises(ValueError, match=message):
        build_parts(loaded)


@pytest.mark.parametrize(
    ("recipe", "cls", "modules"),
    [
        ("moco_digits", MoCo, ("target", "queue")),
        ("mocov3_digits", MoCo, ("target", "predictor")),
        ("byol_digits", BYOL, ("target", "predictor")),
        ("simsiam_digits", SimSiam, ("predictor",)),
        ("barlow_twins_digits", BarlowTwins, ("head",)),
        ("vicreg_digits", VICReg, ("head",)),
        ("dcl_digits", SimCLR, ("head",)),
        ("supcon_digits", SupCon, ("head",)),
        ("memory_bank_digits", MemoryBankNCE, ("bank",)),
    ],
)
def test_each_shipped_recipe_builds_its_method(recipe, cls, modules):
    from mmcontrast.recipe import build_parts, load_recipe

    loaded = load_recipe(f"recipes/{recipe}.yaml", ["eval.train=null"])
    method = build_parts(loaded).method
    assert type(method) is cls and all(getattr(method, name) is not None for name in modules)
    copy.deepcopy(method)  # runs are checkpointed and may be copied: the EMA pairs survive


def test_simcse_recipe_trains_on_unique_sentences_and_exports_a_sentence_transformers_folder(
    tiny_bert_path, stsb_dir, tmp_path
):
    from sentence_transformers import SentenceTransformer

    from mmcontrast.cli import main
    from mmcontrast.modalities.text import TextEncoder
    from mmcontrast.recipe import build_parts, load_recipe

    overrides = [
        f"model.text.name_or_path={tiny_bert_path}",
        f"data.text.train={stsb_dir / 'sts-train.csv'}",
        f"eval.sts={stsb_dir / 'sts-dev.csv'}",
        "data.text.limit=40",
        "views.text.deletion=0.2",
    ]
    recipe = load_recipe("recipes/simcse_stsb.yaml", overrides)
    parts = build_parts(recipe)
    texts = [row["text"] for row in parts.dataset.rows]
    assert len(texts) == len(set(texts)) and 40 < len(texts) <= 80  # both columns, duplicates dropped
    assert parts.dataset[0]["views"] != parts.dataset[1]["views"] and isinstance(parts.dataset[0]["views"][0], str)
    output = tmp_path / "run"
    run = ["train", "recipes/simcse_stsb.yaml", *overrides, f"output_dir={output}", "train.batch_size=8"]
    assert main([*run, "train.max_steps=3", "eval.limit=40", "train.eval_steps=0", "train.progress_bar=false"]) == 0
    sentences = ["a man plays a guitar", "the cat sleeps"]
    ours = TextEncoder.from_pretrained(output / "model").encode(sentences)
    theirs = SentenceTransformer(str(output / "model"), device="cpu").encode(sentences, convert_to_tensor=True)
    assert torch.allclose(ours, theirs.cpu(), atol=1e-5)
    card = (output / "model" / "README.md").read_text()
    assert "deletion 0.2" in card and "sentence-similarity" in card


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.audio={kind: mel}"], "model.audio and model.text are both set"),
        (["views.strength=0.3"], "views.strength: settings of another modality in a views recipe on text"),
        (["data.text=null"], "data.text.train is not set"),
        (["eval.train=sklearn:digits"], "eval.train: the in-run probes score images"),
    ],
)
def test_text_views_recipe_refuses_other_modalities_settings(tiny_bert_path, overrides, message):
    from mmcontrast.recipe import build_parts, load_recipe

    recipe = load_recipe("recipes/simcse_stsb.yaml", [f"model.text.name_or_path={tiny_bert_path}", *overrides])
    with pytest.raises(ValueError, match=message):
        build_parts(recipe)


def test_memory_bank_softmax_objective_is_the_exact_non_parametric_softmax():
    method = MemoryBankNCE(encoder(), nn.Linear(16, D), num_data=20, objective="softmax", temperature=0.1)
    batch = method.collate(rows())
    z = F.normalize(method(batch, embed_only=True)["projections"], dim=-1)
    bank = method.bank.memory
    terms = [ce(z[i, v] @ bank.T / 0.1, int(batch["indices"][i])) for v in range(2) for i in range(B)]
    assert torch.allclose(method(batch).loss, torch.stack(terms).mean(), atol=1e-6)
    assert int(method.draws) == 0 and float(method.nce.normaliser) < 0  # no noise, no Z (-1: not estimated)
    with pytest.raises(ValueError, match="objective must be 'nce' or 'softmax'"):
        MemoryBankNCE(encoder(), nn.Linear(16, D), num_data=20, objective="full")
