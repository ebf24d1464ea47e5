"""The methods of the one-tower views recipes: their `model.<method>` sections, heads and one factory.

`method:` picks the method (`simclr`, `supcon`, `moco`, `byol`, `simsiam`, `barlow_twins`, `vicreg`,
`memory_bank`); :func:`build_method` builds it on any backbone from the recipe's `model.head`, `model.predictor`
and the method's own section, after :func:`check_method_settings` refused, by key, the settings of another method.
The image, audio (:mod:`mmcontrast.recipes.simclr`) and text (:mod:`mmcontrast.recipes.text_views`) recipes share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mmcontrast.losses import cosine_momentum
from mmcontrast.methods.bootstrap import BYOL, SimSiam
from mmcontrast.methods.memory_bank import MemoryBankNCE
from mmcontrast.methods.moco import MoCo
from mmcontrast.methods.redundancy import BarlowTwins, VICReg
from mmcontrast.methods.simclr import SimCLR
from mmcontrast.methods.supcon import SupCon
from mmcontrast.methods.views import ViewsMethod
from mmcontrast.modalities.heads import HeadKind, projection_head
from mmcontrast.typed_config import NonNegativeFloat, PositiveFloat, PositiveInt, Range, UnitFloat

ViewsMethodName = Literal["simclr", "supcon", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "memory_bank"]
VIEWS_METHODS: tuple[str, ...] = ViewsMethodName.__args__  # type: ignore[attr-defined]


@dataclass
class HeadConfig:
    """The projection head, used in training and dropped at export (`model.head:` section).

    Attributes:
        kind: `mlp` (SimCLR's 2-layer head), `linear`, or `none` (no head: the features themselves; SimCSE).
        hidden_dim: width of the MLP's hidden layer (default: the backbone's feature size).
        out_dim: size of the projections the loss compares (SimCLR: 128).
        batch_norm: Linear-BN-ReLU-Linear (SimCLR's reference code; clearly better on digits) instead of the
            paper's Linear-ReLU-Linear; under `train.cache_chunk_size` its statistics are per chunk.
        num_layers: linear layers of the MLP (SimSiam, MoCo v3, Barlow Twins and VICReg use 3).
        output_batch_norm: an affine-free batch norm after the last layer (SimSiam's projector, MoCo v3's heads).
    """

    kind: HeadKind = "mlp"
    hidden_dim: PositiveInt | None = None
    out_dim: PositiveInt = 128
    batch_norm: bool = True
    num_layers: Annotated[int, Range(ge=2)] = 2
    output_batch_norm: bool = False


@dataclass
class MocoConfig:
    """MoCo's settings (`model.moco:` section; `method: moco`).

    Attributes:
        version: 2 (a queue of past keys as negatives, constant momentum) or 3 (a predictor, the keys of the
            batch as negatives, symmetric, cosine momentum schedule to 1; set `model.predictor`).
        queue_size: v2: keys kept as negatives (65536 in the paper; a few times the batch on small data).
        momentum: the key encoder's momentum (default: v2 0.999 constant, v3 0.99 rising to 1).
        symmetric: v2: also score the second view's queries against the first view's keys (v3 always is).
    """

    version: Literal[2, 3] = 2
    queue_size: PositiveInt = 4096
    momentum: UnitFloat | None = None
    symmetric: bool = False


@dataclass
class ByolConfig:
    """BYOL's target network (`model.byol:` section; `method: byol`).

    Attributes:
        momentum: base momentum of the EMA target, raised to `final_momentum` along a cosine over training.
        final_momentum: momentum at the last step.
    """

    momentum: UnitFloat = 0.996
    final_momentum: UnitFloat = 1.0


@dataclass
class BarlowTwinsConfig:
    """Barlow Twins' loss (`model.barlow_twins:` section; `method: barlow_twins`).

    Attributes:
        lambda_offdiag: weight of the off-diagonal term (5e-3 for 8192 dimensions; about 1/d for smaller ones).
    """

    lambda_offdiag: PositiveFloat = 5e-3


@dataclass
class VicregConfig:
    """VICReg's loss weights (`model.vicreg:` section; `method: vicreg`).

    Attributes:
        sim_weight: invariance (MSE) weight, lambda.
        var_weight: variance hinge weight, mu.
        cov_weight: covariance weight, nu.
    """

    sim_weight: NonNegativeFloat = 25.0
    var_weight: NonNegativeFloat = 25.0
    cov_weight: NonNegativeFloat = 1.0


@dataclass
class MemoryBankConfig:
    """Instance discrimination with a memory bank (`model.memory_bank:` section; `method: memory_bank`).

    Attributes:
        negatives: noise entries per query of the `nce` objective (4096 in the paper).
        momentum: momentum of the bank's entries.
        objective: `nce` (binary NCE against `negatives` noise entries, the paper's ImageNet setting) or `softmax`
            (the exact non-parametric softmax over the whole bank, affordable on small datasets).
    """

    negatives: PositiveInt = 4096
    momentum: UnitFloat = 0.5
    objective: Literal["nce", "softmax"] = "nce"


METHOD_SECTIONS = {
    "moco": "moco",
    "byol": "byol",
    "barlow_twins": "barlow_twins",
    "vicreg": "vicreg",
    "memory_bank": "memory_bank",
}
"""Methods with their own `model.<method>` section."""
DEFAULT_TEMPERATURE = {"simclr": 0.5, "supcon": 0.1, "moco": 0.2, "memory_bank": 0.07}
"""The papers' temperatures, used when `model.temperature` is null."""
PREDICTOR_METHODS = frozenset({"byol", "simsiam"})
"""Methods that need `model.predictor` (and MoCo v3)."""


def build_head(config: HeadConfig, in_dim: int) -> Any:
    """The head a `model.head` (or `model.predictor`) section describes, on inputs of size ``in_dim``."""
    return projection_head(
        config.kind,
        in_dim,
        config.out_dim,
        hidden_dim=config.hidden_dim,
        batch_norm=config.batch_norm,
        num_layers=config.num_layers,
        output_batch_norm=config.output_batch_norm,
    )


def check_method_settings(recipe: Any) -> None:
    """Refuse, by key, the settings of another method than `method` in a views recipe (image, audio or text): a
    `model.byol` section in a MoCo recipe, a predictor where the method has none, a SimCLR loss in a BYOL recipe.

    Raises:
        ValueError: naming the key, the method, and what to do.
    """
    method, model = recipe.method, recipe.model
    stray = [f"model.{name}" for name in METHOD_SECTIONS if name != method and getattr(model, name) is not None]
    if method != "simclr":  # SimCLR's loss choice, against the schema's own defaults
        defaults = type(model)()
        stray += [f"model.{key}" for key in ("loss", "weight_sigma") if getattr(model, key) != getattr(defaults, key)]
    if method not in DEFAULT_TEMPERATURE and model.temperature is not None:
        stray.append("model.temperature")
    if model.loss_chunk_size is not None and (method != "simclr" or model.loss in ("dcl", "dclw")):
        stray.append("model.loss_chunk_size")
    wants_predictor = method in PREDICTOR_METHODS or (method == "moco" and (model.moco or MocoConfig()).version == 3)
    if model.predictor is not None and not wants_predictor:
        stray.append("model.predictor")
    if stray:
        raise ValueError(
            f"{', '.join(sorted(set(stray)))}: not a setting of method {method!r}; remove it (each method reads "
            "model.head, its own model.<method> section, and model.predictor for byol, simsiam and moco version 3)"
        )
    if wants_predictor and model.predictor is None:
        raise ValueError(
            f"model.predictor is not set: method {method!r} trains a predictor on top of the head; add a "
            "model.predictor section (e.g. {kind: mlp, hidden_dim: 256, out_dim: <model.head.out_dim>, batch_norm: "
            "true}; see recipes/byol_digits.yaml)"
        )


def build_method(recipe: Any, encoder: Any, modality: str, num_data: int) -> ViewsMethod:
    """The `method` of the recipe on ``encoder``, with its heads (`model.head`, `model.predictor`) and settings;
    ``num_data`` is the number of training examples (the memory bank's size)."""
    check_method_settings(recipe)
    method, model = recipe.method, recipe.model
    head = build_head(model.head, encoder.embedding_dim)
    head_dim = encoder.embedding_dim if model.head.kind == "none" else model.head.out_dim
    predictor = build_head(model.predictor, head_dim) if model.predictor is not None else None
    temperature = model.temperature or DEFAULT_TEMPERATURE.get(method, 0.5)
    options: dict[str, Any] = {"modality": modality}
    if method == "simclr":
        return SimCLR(
            encoder,
            head,
            **options,
            temperature=temperature,
            gather=model.gather,
            chunk_size=model.loss_chunk_size,
            loss=model.loss,
            weight_sigma=model.weight_sigma,
        )
    if method == "supcon":
        return SupCon(encoder, head, **options, temperature=temperature, gather=model.gather)
    if method == "moco":
        moco = model.moco or MocoConfig()
        momentum: Any = moco.momentum
        if moco.version == 3:
            momentum = cosine_momentum(0.99 if momentum is None else momentum)
        return MoCo(
            encoder,
            head,
            predictor,
            version=moco.version,
            **options,
            temperature=temperature,
            momentum=momentum,
            queue_size=moco.queue_size,
            symmetric=moco.symmetric,
            gather=model.gather,
        )
    if method == "byol":
        byol = model.byol or ByolConfig()
        assert predictor is not None
        return BYOL(encoder, head, predictor, **options, momentum=byol.momentum, final_momentum=byol.final_momentum)
    if method == "simsiam":
        assert predictor is not None
        return SimSiam(encoder, head, predictor, **options)
    if method == "barlow_twins":
        barlow = model.barlow_twins or BarlowTwinsConfig()
        return BarlowTwins(encoder, head, **options, lambda_offdiag=barlow.lambda_offdiag, gather=model.gather)
    if method == "vicreg":
        weights = model.vicreg or VicregConfig()
        return VICReg(
            encoder,
            head,
            **options,
            sim_weight=weights.sim_weight,
            var_weight=weights.var_weight,
            cov_weight=weights.cov_weight,
            gather=model.gather,
        )
    bank = model.memory_bank or MemoryBankConfig()
    return MemoryBankNCE(
        encoder,
        head,
        num_data,
        **options,
        temperature=temperature,
        negatives=bank.negatives,
        momentum=bank.momentum,
        objective=bank.objective,
        seed=recipe.train.seed,
        gather=model.gather,
    )


def memory_bank_loss(model: Any) -> str:
    """The memory bank's objective, in words."""
    return (
        "non-parametric softmax" if (model.memory_bank or MemoryBankConfig()).objective == "softmax" else "binary NCE"
    )


def objective(recipe: Any) -> str:
    """One phrase naming the recipe's method and its loss, for model cards."""
    method, model = recipe.method, recipe.model
    temperature = model.temperature or DEFAULT_TEMPERATURE.get(method, 0.5)
    if method == "simclr":
        losses = {"nt_xent": "NT-Xent", "dcl": "DCL", "dclw": "DCLW", "info_nce": "InfoNCE"}
        return f"SimCLR method ({losses[model.loss]} between augmented views, temperature {temperature})"
    if method == "moco":
        moco = model.moco or MocoConfig()
        negatives = f"a queue of {moco.queue_size} keys" if moco.version == 2 else "the batch's keys"
        return f"MoCo v{moco.version} method (momentum encoder, {negatives} as negatives, temperature {temperature})"
    return {
        "supcon": f"SupCon method (supervised contrastive loss over labelled views, temperature {temperature})",
        "byol": "BYOL method (prediction of a momentum target's projection of the other view)",
        "simsiam": "SimSiam method (prediction of the other view's projection, stop-gradient)",
        "barlow_twins": "Barlow Twins method (cross-correlation of the views driven to the identity)",
        "vicreg": "VICReg method (invariance, variance and covariance terms)",
        "memory_bank": f"memory-bank instance discrimination ({memory_bank_loss(model)}, temperature {temperature})",
    }[method]
