"""Pretrained image weights by name, through each library's own registry and cache.

- timm: a pretrained tag of the model (``resnet18`` + ``a1_in1k`` -> ``timm.create_model("resnet18.a1_in1k",
  pretrained=True)``), ``True`` for timm's default tag; weights come from the Hugging Face Hub cache (a few
  older ones from GitHub, through torch.hub's cache).
- torchvision: a member of the model's weights enum (``IMAGENET1K_V1``, ``ResNet18_Weights.IMAGENET1K_V1``,
  ``DEFAULT``), ``True`` for ``DEFAULT``; weights come from torch.hub's cache (``$TORCH_HOME/hub/checkpoints``),
  filled from download.pytorch.org.
- open_clip: a pretrained tag of the model (``laion2b_s34b_b79k``); weights come from the Hugging Face Hub cache
  (or, for a few tags, open_clip's URL cache).

A name the library does not know is refused before anything is downloaded, listing the names it knows. Weights
that are not cached and cannot be downloaded (``HF_HUB_OFFLINE`` set, or no network) stop with a one-line
:class:`PretrainedWeightsUnavailable` that names the setting, the weights and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

T = TypeVar("T")


class PretrainedWeightsUnavailable(OSError):
    """Pretrained weights asked for by name are not in the local cache and cannot be downloaded."""


def _weights_key(key: str) -> str:
    """The local weights file setting next to the ``pretrained`` one (``model.image.pretrained`` -> ``.weights``)."""
    section, _, _ = key.rpartition(".")
    return f"{section}.weights" if section else "weights"


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def _offline() -> bool:
    from huggingface_hub import is_offline_mode

    return is_offline_mode()


def fetch(download: Callable[[], T], *, key: str, weights: str, cache: str, source: str) -> T:
    """Run ``download`` (a library call that reads the cache and downloads what is missing); a failed download
    becomes a one-line :class:`PretrainedWeightsUnavailable`.

    Args:
        download: the library call.
        key: the setting that asked for the weights, for the message (``model.image.pretrained``).
        weights: the weights, quoted, as the message names them (``'resnet18.a1_in1k'``).
        cache: where the library looks for them locally.
        source: where they are downloaded from.
    """
    try:
        return download()
    except OSError as error:  # urllib's URLError, huggingface_hub's LocalEntryNotFoundError, ConnectionError...
        first_line = next(iter(str(error).strip().splitlines()), "")
        failure = f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
        raise _unavailable(key, weights, cache, source, failure) from None


def _unavailable(key: str, weights: str, cache: str, source: str, failure: str | None) -> PretrainedWeightsUnavailable:
    needs = f"{key}: the weights {weights} are not in the local cache ({cache}) and need a download from {source}"
    local = f"or give a local weights file in {_weights_key(key)}"
    if _offline():
        return PretrainedWeightsUnavailable(
            f"{needs}, but HF_HUB_OFFLINE is set: run once online (HF_HUB_OFFLINE=0) to cache them, {local}"
        )
    return PretrainedWeightsUnavailable(
        f"{needs}, which failed ({failure}): run once with network access to cache them, {local}"
    )


def hub_cache() -> str:
    """The Hugging Face Hub cache folder the downloads of timm and open_clip use."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def torch_hub_checkpoint(url: str) -> Path:
    """Where torch.hub caches the download of ``url`` (``$TORCH_HOME/hub/checkpoints/<its file name>``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def fetch_from_url(build: Callable[[], T], url: str, *, key: str, weights: str) -> T:
    """Run ``build`` (a library call that loads ``url`` through torch.hub's cache), refusing at once when the
    checkpoint is not cached and ``HF_HUB_OFFLINE`` is set (torch.hub itself does not read it), and turning a
    failed download into one line."""
    checkpoint = torch_hub_checkpoint(url)
    details = {"key": key, "weights": weights, "cache": str(checkpoint), "source": url}
    if not checkpoint.is_file() and _offline():
        raise _unavailable(**details, failure=None)
    return fetch(build, **details)


def timm_pretrained_name(model: str, pretrained: bool | str, key: str) -> str:
    """``model`` with the pretrained tag timm will load (``resnet18.a1_in1k``), checked against
    ``timm.list_pretrained``.

    ``pretrained`` is ``True`` (timm's default tag, or the tag already in ``model``) or a tag name.
    """
    import timm
    from timm.models import split_model_name_tag

    architecture, named_tag = split_model_name_tag(model)
    known = timm.list_pretrained(f"{architecture}.*")
    if not known:
        raise ValueError(f"{key}: timm model '{architecture}' has no pretrained weights (timm.list_pretrained)")
    if pretrained is True:
        name = f"{architecture}.{named_tag}" if named_tag else known[0]
    else:
        if named_tag:
            raise ValueError(
                f"{key}: the backbone '{model}' names a tag already; give the tag in one place (pretrained: true)"
            )
        name = f"{architecture}.{pretrained}"
    if name not in known:
        tags = [known_name.partition(".")[2] for known_name in known]
        raise ValueError(
            f"{key}: '{name.partition('.')[2]}' is not a pretrained tag of timm model '{architecture}'; "
            f"its tags: {_listing(tags)}"
        )
    return name


def fetch_timm(build: Callable[[], T], name: str, key: str) -> T:
    """Run ``build`` (``timm.create_model(name, pretrained=True, ...)``), turning a failed download into one line
    (weights timm loads from a URL: see :func:`fetch_from_url`)."""
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(name)
    if not config.hf_hub_id:  # a few older timm weights are only on GitHub releases
        return fetch_from_url(build, config.url, key=key, weights=f"'{name}'")
    source = f"the Hugging Face Hub ({config.hf_hub_id})"
    return fetch(build, key=key, weights=f"'{name}'", cache=hub_cache(), source=source)


def torchvision_weights(model: str, pretrained: bool | str, key: str) -> Any:
    """The member of ``model``'s torchvision weights enum named by ``pretrained`` (``True``: ``DEFAULT``)."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(model)
    except ValueError:
        raise ValueError(f"{key}: torchvision model '{model}' has no pretrained weights") from None
    name = "DEFAULT" if pretrained is True else str(pretrained).removeprefix(f"{enum.__name__}.")
    if name not in enum.__members__:
        raise ValueError(
            f"{key}: '{pretrained}' is not a weights name of torchvision model '{model}'; its weights "
            f"({enum.__name__}): {_listing(list(enum.__members__))}"
        )
    return enum[name]


def fetch_torchvision(build: Callable[[], T], weights: Any, key: str) -> T:
    """Run ``build`` (a torchvision builder given ``weights``): see :func:`fetch_from_url`."""
    return fetch_from_url(build, weights.url, key=key, weights=f"'{weights}'")


def open_clip_pretrained_cfg(name: str, pretrained: bool | str, key: str) -> dict[str, Any]:
    """open_clip's pretrained config of tag ``pretrained`` for model ``name``, checked against
    ``open_clip.list_pretrained_tags_by_model``."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    if not tags:
        raise ValueError(f"{key}: open_clip model '{name}' has no pretrained tags (open_clip.list_pretrained)")
    if pretrained is True:
        raise ValueError(f"{key}: open_clip has no default weights; name a tag of '{name}': {_listing(tags)}")
    config = open_clip.get_pretrained_cfg(name, pretrained)
    if not config:
        raise ValueError(
            f"{key}: '{pretrained}' is not a pretrained tag of open_clip model '{name}'; its tags: {_listing(tags)}"
        )
    return config


def fetch_open_clip(name: str, tag: str, config: dict[str, Any], key: str) -> str:
    """The local file of open_clip weights ``config`` (``open_clip.download_pretrained``: cache, else download)."""
    import open_clip

    hub = config.get("hf_hub", "").rstrip("/")
    source = f"the Hugging Face Hub ({hub})" if hub else config.get("url", "")
    cache = hub_cache() if hub else os.path.expanduser("~/.cache/clip")  # open_clip's URL cache
    weights = f"'{tag}' of open_clip model '{name}'"
    return fetch(lambda: open_clip.download_pretrained(config), key=key, weights=weights, cache=cache, source=source)
