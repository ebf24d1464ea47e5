"""Text views: word deletion, word swap and word masking, seeded per row like the SimCLR image views.

Every step is a small picklable callable ``str -> str`` that draws all its randomness from torch's default CPU
generator (``torch.rand``, ``torch.randint`` without a ``generator``). Wrapped in
:class:`mmcontrast.views.ViewsDataset` with ``key="text"``, that generator is seeded from ``(seed, epoch, row)``
around each row (:func:`mmcontrast.views.simclr.view_seed`), so the views are a fixed function of that triple: the
same in any DataLoader worker or process, the same after a resume, new ones in another epoch.

Words are the whitespace-separated tokens of the text (``text.split()``); a step that changes the text joins its
words with single spaces. The steps:

- :class:`WordDeletion`: drop each word with probability ``p``, never all of them (EDA's random deletion);
- :class:`WordSwap`: swap the words at two random positions, ``swaps`` times (EDA's random swap);
- :class:`WordMasking`: replace each word with a mask token with probability ``p`` (BERT-style masking, on words
  rather than sub-word tokens, and without BERT's 80/10/10 split: a chosen word is always masked);
- :class:`Identity` / :func:`dropout_views`: the sentence itself, the unsupervised SimCSE view: two copies of a
  sentence differ only by the encoder's dropout masks (the encoder in train mode embeds both in one pass).

:func:`text_transform` composes the enabled steps in a fixed order (deletion, swap, masking).

Example::

    from mmcontrast.views import ViewsDataset
    from mmcontrast.views.text import text_transform

    views = ViewsDataset(rows, text_transform(deletion=0.1, swaps=1), key="text", seed=0)
    views[0]["views"]  # two augmented copies of rows[0]["text"], a fixed function of (seed, epoch, 0)

References:
    Gao, Yao, Chen. "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021.
    https://arxiv.org/abs/2104.08821

    Wei, Zou. "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text Classification Tasks",
    EMNLP-IJCNLP 2019. https://arxiv.org/abs/1901.11196

    Devlin, Chang, Lee, Toutanova. "BERT: Pre-training of Deep Bidirectional Transformers for Language
    Understanding", NAACL 2019 (masked language modelling). https://arxiv.org/abs/1810.04805
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

TextStep = Callable[[str], str]


def _check_probability(owner: str, name: str, value: float) -> float:
    """``value`` as a float in ``[0, 1)``, or a ValueError naming ``owner``'s argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(
            f"{owner}: {name} must be a probability in [0, 1), got {value!r}; use 0 to turn it off "
            f"(1 would remove or mask every word)"
        )
    return float(value)


def _check_count(owner: str, name: str, value: int) -> int:
    """``value`` as a non-negative int, or a ValueError naming ``owner``'s argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner}: {name} must be a whole number >= 0, got {value!r}; use 0 to turn it off")
    return value


def _check_mask_token(owner: str, value: str) -> str:
    """``value`` if it is one word (non-empty, no whitespace), so that masking keeps the number of words."""
    if not isinstance(value, str) or len(value.split()) != 1 or value.strip() != value:
        raise ValueError(
            f"{owner}: mask_token must be a single word without whitespace (such as '[MASK]' or the tokenizer's "
            f"mask token), got {value!r}"
        )
    return value


@dataclass(frozen=True)
class WordDeletion:
    """Drop each word independently with probability ``p``; if every word is dropped, keep one at random.

    The kept words stay in their order. Texts without words are returned as they are, and ``p = 0`` returns the
    text unchanged (a deletion that drops nothing joins the words with single spaces).
    """

    p: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _check_probability("WordDeletion", "p", self.p))

    def __call__(self, text: str) -> str:
        words = text.split()
        if self.p == 0 or not words:
            return text
        keep = torch.rand(len(words)) >= self.p
        if not bool(keep.any()):
            return words[int(torch.randint(len(words), ()))]
        return " ".join(word for word, kept in zip(words, keep.tolist(), strict=True) if kept)


@dataclass(frozen=True)
class WordMasking:
    """Replace each word independently with ``mask_token`` with probability ``p`` (the number of words is kept).

    ``p = 0`` returns the text unchanged.
    """

    p: float
    mask_token: str = "[MASK]"

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _check_probability("WordMasking", "p", self.p))
        _check_mask_token("WordMasking", self.mask_token)

    def __call__(self, text: str) -> str:
        words = text.split()
        if self.p == 0 or not words:
            return text
        masked = torch.rand(len(words)) < self.p
        return " ".join(self.mask_token if mask else word for word, mask in zip(words, masked.tolist(), strict=True))


@dataclass(frozen=True)
class WordSwap:
    """Swap the words at two distinct random positions, ``swaps`` times (a permutation of the words).

    Texts of fewer than two words, and ``swaps = 0``, are returned unchanged.
    """

    swaps: int = 1

    def __post_init__(self) -> None:
        _check_count("WordSwap", "swaps", self.swaps)

    def __call__(self, text: str) -> str:
        words = text.split()
        if self.swaps == 0 or len(words) < 2:
            return text
        n = len(words)
        for _ in range(self.swaps):
            i = int(torch.randint(n, ()))
            j = int(torch.randint(n - 1, ()))
            j += j >= i  # a position other than i, uniform over the n - 1 others
            words[i], words[j] = words[j], words[i]
        return " ".join(words)


@dataclass(frozen=True)
class Identity:
    """The text itself: the unsupervised SimCSE view (see :func:`dropout_views`). Draws nothing."""

    def __call__(self, text: str) -> str:
        return text


def dropout_views() -> Identity:
    """The unsupervised SimCSE views (Gao et al., EMNLP 2021, https://arxiv.org/abs/2104.08821).

    A SimCSE positive pair is the same sentence twice: the view transform is the identity, and the two views differ
    only by the encoder's dropout masks. For that the encoder must be in train mode (dropout on) when it embeds the
    views; SimCSE embeds both copies in one train-mode forward pass (the batch holds each sentence twice), so each
    copy gets its own dropout mask. ``ViewsDataset(rows, dropout_views(), key="text")`` gives rows whose ``views``
    are ``[text, text]``.
    """
    return Identity()


@dataclass(frozen=True)
class TextViews:
    """The steps applied in order: one view of a text."""

    steps: Sequence[TextStep]

    def __call__(self, text: str) -> str:
        for step in self.steps:
            text = step(text)
        return text


def text_transform(
    deletion: float = 0.0,
    masking: float = 0.0,
    swaps: int = 0,
    mask_token: str = "[MASK]",
) -> TextStep:
    """One text view: word deletion, then word swaps, then word masking, each left out when off.

    With every step off this is the identity (:func:`dropout_views`): the SimCSE views, which differ only by the
    encoder's dropout.

    Args:
        deletion: probability of dropping each word (:class:`WordDeletion`), in ``[0, 1)``.
        masking: probability of masking each word (:class:`WordMasking`), in ``[0, 1)``.
        swaps: random swaps of two words (:class:`WordSwap`), >= 0.
        mask_token: the word that masked words become (one word; use the tokenizer's mask token, e.g. ``<mask>``
            for RoBERTa).

    Raises:
        ValueError: an argument is out of range; the message names it.
    """
    deletion = _check_probability("text_transform", "deletion", deletion)
    masking = _check_probability("text_transform", "masking", masking)
    swaps = _check_count("text_transform", "swaps", swaps)
    mask_token = _check_mask_token("text_transform", mask_token)
    steps: list[TextStep] = []
    if deletion > 0:
        steps.append(WordDeletion(deletion))
    if swaps > 0:
        steps.append(WordSwap(swaps))
    if masking > 0:
        steps.append(WordMasking(masking, mask_token))
    if not steps:
        return dropout_views()
    return TextViews(tuple(steps))


__all__ = [
    "Identity",
    "TextViews",
    "WordDeletion",
    "WordMasking",
    "WordSwap",
    "dropout_views",
    "text_transform",
]
