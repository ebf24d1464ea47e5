"""SimCLR's augmented views: the random transformation family of Chen et al. (2020), seeded per row.

Two (or more) views of an image are drawn independently from one stochastic pipeline
(``torchvision.transforms.v2``):

1. random resized crop to ``size`` (area fraction ``crop_scale``, aspect ratio 3/4..4/3), bicubic;
2. horizontal flip with p = 0.5 (optional: off for digits and text, where mirroring changes the class);
3. colour jitter with strength ``s``: brightness 0.8s, contrast 0.8s, saturation 0.8s, hue 0.2s, applied with
   p = 0.8;
4. grayscale with p = 0.2;
5. Gaussian blur with p = 0.5, kernel ~10% of the side (odd, >= 3), sigma uniform in [0.1, 2.0];
6. scale to [0, 1] and normalise with the backbone's mean and std.

The views are made in the data pipeline (DataLoader workers), not in the model. :class:`ViewsDataset` makes
them reproducible: row ``i`` of epoch ``e`` is transformed under a torch generator seeded from
``(seed, e, i)``, so the same triple gives the same views in any worker or process, a resumed run sees the
same views, and another epoch gives new ones.

The same random steps (:func:`augment_steps`) make the training augmentation of paired data
(:func:`image_augmentation`, open_clip's ``AugmentationCfg``: crop, jitter, grayscale; one augmented image per
row, no normalisation: the image tower's preprocessing does that), seeded the same way by
:class:`AugmentedDataset`.

Reference:
    Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual Representations",
    ICML 2020 (Appendix A: data augmentation details). https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

from mmcontrast.data.streaming import sample_key
from mmcontrast.modalities.image import to_rgb

SIMCLR_CROP_SCALE = (0.08, 1.0)


def _to_rgb(image: Any) -> Any:
    """PIL images of any mode -> 8-bit RGB (tensors pass through); a named function so that workers can pickle it."""
    return to_rgb(image) if isinstance(image, Image.Image) else image


def blur_kernel_size(size: int) -> int:
    """SimCLR's blur kernel: about 10% of the image side, odd, at least 3."""
    kernel = max(3, round(0.1 * size))
    return kernel if kernel % 2 == 1 else kernel + 1


def augment_steps(
    size: int,
    *,
    crop_scale: Sequence[float],
    flip: bool,
    color_jitter: Sequence[float] | None,
    color_jitter_prob: float,
    grayscale_prob: float,
    blur_prob: float,
) -> list[Any]:
    """The random steps shared by SimCLR's views and CLIP's training augmentation, on a uint8 image tensor.

    Random resized crop to ``size`` (area fraction ``crop_scale``, aspect ratio 3/4..4/3, bicubic), then each
    step that is on: horizontal flip (p = 0.5), colour jitter ``(brightness, contrast, saturation, hue)`` with
    p = ``color_jitter_prob``, grayscale with p = ``grayscale_prob``, Gaussian blur (kernel ~10% of ``size``, sigma in
    [0.1, 2.0]) with p = ``blur_prob``. A probability of 0 leaves its step out.
    """
    if size < 1:
        raise ValueError(f"views: size must be positive, got {size}")
    low, high = (float(v) for v in crop_scale)
    if not 0 < low <= high <= 1:
        raise ValueError(f"views: crop_scale must be (min, max) with 0 < min <= max <= 1, got {list(crop_scale)}")
    steps: list[Any] = [
        v2.RandomResizedCrop(size, scale=(low, high), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if color_jitter is not None and color_jitter_prob > 0:
        steps.append(v2.RandomApply([v2.ColorJitter(*color_jitter)], p=color_jitter_prob))
    if grayscale_prob > 0:
        steps.append(v2.RandomGrayscale(p=grayscale_prob))
    if blur_prob > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))], p=blur_prob))
    return steps


def simclr_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    strength: float = 1.0,
    crop_scale: Sequence[float] = SIMCLR_CROP_SCALE,
    flip: bool = True,
    blur: bool = True,
    grayscale: bool = True,
) -> v2.Compose:
    """The SimCLR augmentation of one view: PIL image (or uint8 tensor) -> normalised ``[3, size, size]``.

    Args:
        size: side of the output view (the backbone's input size).
        mean, std: the backbone's input normalisation.
        strength: colour-jitter strength ``s`` (jitter 0.8s, 0.8s, 0.8s, 0.2s); 0 disables colour jitter.
        crop_scale: (min, max) fraction of the image area kept by the random resized crop.
        flip: random horizontal flip (p = 0.5).
        blur: Gaussian blur (p = 0.5, kernel ~10% of ``size``).
        grayscale: random grayscale (p = 0.2).
    """
    if strength < 0:
        raise ValueError(f"views: strength must be >= 0, got {strength}")
    jitter = (0.8 * strength, 0.8 * strength, 0.8 * strength, min(0.2 * strength, 0.5)) if strength > 0 else None
    steps = augment_steps(
        size,
        crop_scale=crop_scale,
        flip=flip,
        color_jitter=jitter,
        color_jitter_prob=0.8,
        grayscale_prob=0.2 if grayscale else 0.0,
        blur_prob=0.5 if blur else 0.0,
    )
    return v2.Compose(
        [
            v2.Lambda(_to_rgb),
            v2.ToImage(),
            *steps,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def image_augmentation(
    size: int,
    *,
    crop_scale: Sequence[float] = (0.9, 1.0),
    flip: bool = False,
    color_jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
    color_jitter_prob: float = 0.0,
    grayscale_prob: float = 0.0,
) -> v2.Compose:
    """The training augmentation of paired images (CLIP), as open_clip's ``AugmentationCfg`` describes it.

    PIL image (or uint8 tensor) -> augmented uint8 ``[3, size, size]`` tensor: random resized crop, then the
    optional flip, colour jitter and grayscale of :func:`augment_steps` (no blur). The image tower's own
    ``preprocess`` then scales and normalises it as it does any image, so evaluation (no augmentation) and
    training see the same normalisation.

    Args:
        size: side of the output (the image tower's input size).
        crop_scale: (min, max) fraction of the image area kept by the random resized crop (open_clip: 0.9, 1).
        flip: random horizontal flip (p = 0.5); off by default: mirrored digits and text change their meaning.
        color_jitter: (brightness, contrast, saturation, hue) strengths of the colour jitter.
        color_jitter_prob: probability of the colour jitter; 0 leaves it out.
        grayscale_prob: probability of converting to grayscale; 0 leaves it out.
    """
    steps = augment_steps(
        size,
        crop_scale=crop_scale,
        flip=flip,
        color_jitter=color_jitter,
        color_jitter_prob=color_jitter_prob,
        grayscale_prob=grayscale_prob,
        blur_prob=0.0,
    )
    return v2.Compose([v2.Lambda(_to_rgb), v2.ToImage(), *steps])


def view_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that is a fixed function of ``(seed, epoch, index)`` (the same in every process)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def forked_cpu_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded by ``seed`` (transforms draw from it), then restore its state.

    A fork of the RNG, as ``torch.random.fork_rng(devices=[])`` with ``torch.manual_seed`` would be, without their
    cost of seeding every accelerator backend for each row: the caller's random stream is left untouched.
    """
    generator = torch.default_generator
    state = generator.get_state()
    try:
        generator.manual_seed(seed)
        yield
    finally:
        generator.set_state(state)


class SeededRows(torch.utils.data.Dataset):
    """Rows whose random treatment (views, an augmentation, a crop) is drawn from ``view_seed(seed, epoch, index)``:
    the base of the view datasets. The engine calls :meth:`set_epoch` before each epoch (and rebuilds its
    DataLoader, so workers see it).

    Args:
        rows: indexable rows, each a dict with a ``key`` field.
        seed: base seed.
        key: the row field that is treated.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], seed: int = 0, key: str = "image") -> None:
        self.rows = rows
        self.seed = int(seed)
        self.key = key
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the treatment of epoch ``epoch`` from now on."""
        self.epoch = int(epoch)

    def row_seed(self, index: int) -> int:
        """The seed of row ``index`` in the current epoch."""
        return view_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self.rows)


class ViewsDataset(SeededRows):
    """Rows with an ``image`` (or another ``key``) -> rows with ``views``: a list of augmented views of it.

    Row ``index`` of epoch ``epoch`` is transformed with torch's CPU generator seeded by
    ``view_seed(seed, epoch, index)``, its state saved before and restored after (a fork of the RNG): the views
    depend on that triple only (not on the worker, process, or what was drawn before), and the caller's RNG is
    left untouched.
    The engine calls :meth:`set_epoch` before each epoch (and rebuilds its DataLoader, so workers see it).

    Args:
        rows: indexable rows, each a dict with a ``key`` field (an ``image``: PIL image or tensor, by default);
            other fields (``label``) are kept, ``key`` is replaced by ``views``.
        views: one transform used for every view, or a sequence of transforms, one per view (asymmetric views).
            A transform draws its randomness from torch's default CPU generator (``torch.rand`` and friends
            without a ``generator``), e.g. the SimCLR image pipeline or the text views of
            :mod:`mmcontrast.views.text`.
        seed: base seed of the views.
        num_views: views per row when ``views`` is a single transform (>= 2).
        key: the row field that the transforms read (``"image"``; ``"text"`` for text views).
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        views: Callable[[Any], Any] | Sequence[Callable[[Any], Any]],
        seed: int = 0,
        num_views: int = 2,
        *,
        key: str = "image",
    ) -> None:
        if callable(views):
            if num_views < 2:
                raise ValueError(f"views: num_views must be >= 2 (positives are pairs of views), got {num_views}")
            transforms = [views] * num_views
        else:
            transforms = list(views)
            if len(transforms) < 2:
                raise ValueError(f"views: give at least two transforms, got {len(transforms)}")
        super().__init__(rows, seed, key)
        self.transforms = transforms

    @property
    def num_views(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.rows[index])
        if self.key not in row:
            raise KeyError(f"views: row {index} has no {self.key!r} (keys: {sorted(row)}); pass key= to name its field")
        value = row.pop(self.key)
        with forked_cpu_rng(self.row_seed(index)):
            row["views"] = [transform(value) for transform in self.transforms]
        row["index"] = index
        return row


class AugmentedDataset(SeededRows):
    """Rows -> the same rows with one augmented version of their ``image`` (or another ``key``): the training
    augmentation of paired data (CLIP), where the positive is the caption, not a second view.

    Seeded as :class:`ViewsDataset`'s views: row ``index`` of epoch ``epoch`` is transformed under torch's CPU
    generator seeded by ``view_seed(seed, epoch, index)`` (a fork: the caller's RNG is left untouched), so the same
    triple gives the same tensor in any worker or process, a resumed run sees the same images, and another epoch
    gives new ones. The engine calls :meth:`set_epoch` before each epoch.

    Args:
        rows: indexable rows, each a dict with a ``key`` field; the other fields (``caption``, ``label``) are kept.
        transform: draws its randomness from torch's default CPU generator (e.g. :func:`image_augmentation`).
        seed: base seed of the augmentation.
        key: the row field that is augmented.
    """

    def __init__(
        self, rows: Sequence[dict[str, Any]], transform: Callable[[Any], Any], seed: int = 0, *, key: str = "image"
    ) -> None:
        super().__init__(rows, seed, key)
        self.transform = transform

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.rows[index])
        with forked_cpu_rng(self.row_seed(index)):
            row[self.key] = self.transform(row[self.key])
        return row


class StreamedViews:
    """The views of streamed rows: a stream's decode, then :class:`ViewsDataset`'s views of the row's ``key``,
    drawn under torch's CPU generator seeded by ``view_seed(seed, epoch, sample)``, ``sample`` naming the row by what
    it is (:func:`~mmcontrast.data.streaming.sample_key`: its tar key, or its content). A resumed stream thus draws
    the same views, and another epoch new ones (the stream calls :meth:`set_epoch` in its worker).

    Args:
        decode: raw streamed row -> a row with a ``key`` field (:class:`~mmcontrast.data.images.StreamedImageRows`).
        views: one transform for every view, or one per view (as :class:`ViewsDataset`).
        seed: base seed of the views.
        num_views: views per row when ``views`` is a single transform.
        key: the row field the transforms read.
    """

    def __init__(
        self,
        decode: Callable[[dict[str, Any]], dict[str, Any]],
        views: Callable[[Any], Any] | Sequence[Callable[[Any], Any]],
        seed: int = 0,
        num_views: int = 2,
        *,
        key: str = "image",
    ) -> None:
        self.decode, self.seed, self.key, self.epoch = decode, int(seed), key, 0
        self.transforms = ViewsDataset([], views, seed, num_views, key=key).transforms

    def set_epoch(self, epoch: int) -> None:
        """Draw the views of epoch ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        row = self.decode(raw)
        value = row.pop(self.key)
        with forked_cpu_rng(view_seed(self.seed, self.epoch, sample_key(raw))):
            row["views"] = [transform(value) for transform in self.transforms]
        return row
