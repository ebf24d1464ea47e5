"""Zero-shot classification and image-text / audio-text retrieval with any dual encoder.

The classifier follows CLIP / open_clip: for each class, the prompt templates filled with the class name are
embedded, the normalised template embeddings are averaged and the mean is renormalised; an image's class is
the one whose classifier row has the highest cosine similarity with the image embedding.

Any :class:`DualEncoder` works: mmcontrast's own two-tower methods, and the loaders of exported folders, one per
format in :mod:`mmcontrast.hub` (``hub.transformers_clip.TransformersDualEncoder``,
``hub.open_clip_folder.OpenClipDualEncoder``; ``hub.dual_encoders.load_dual_encoder`` recognises the folder).
Audio works the same way through an :class:`AudioTextEncoder` (``encode_audio`` over mono waveforms at its
``sample_rate``): mmcontrast's CLAP method and ``hub.transformers_clap.TransformersClapEncoder``; the default
prompt is CLAP's "This is a sound of {}." (:data:`AUDIO_TEMPLATES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mmcontrast.evaluation.retrieval import retrieval_metrics

DEFAULT_TEMPLATES = ("a photo of a {}.",)
AUDIO_TEMPLATES = ("This is a sound of {}.", "a recording of {}.", "someone says {}.", "the spoken word {}.")
"""Caption templates for labelled audio; the first is the zero-shot prompt of CLAP and of transformers' pipeline."""


class DualEncoder(Protocol):
    """Anything that embeds images and texts into one space (normalised rows)."""

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor: ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


class AudioTextEncoder(Protocol):
    """Anything that embeds audio clips and texts into one space (normalised rows).

    Attributes:
        sample_rate: the rate (Hz) of the mono waveforms ``encode_audio`` takes; callers resample to it.
    """

    @property
    def sample_rate(self) -> int: ...

    def encode_audio(self, waveforms: Sequence[torch.Tensor]) -> torch.Tensor: ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


def zero_shot_classifier(
    encoder: DualEncoder | AudioTextEncoder, classes: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """``[C, d]`` class embeddings: mean of the normalised template embeddings of each class, renormalised."""
    if not classes:
        raise ValueError("zero-shot classification needs at least one class name")
    bad = [t for t in templates if "{}" not in t]
    if bad or not templates:
        raise ValueError(f"every prompt template needs a '{{}}' for the class name; got {list(templates)}")
    prompts = [template.format(name) for name in classes for template in templates]
    embeddings = F.normalize(encoder.encode_texts(prompts).float(), dim=-1)
    per_class = embeddings.view(len(classes), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)


def classes_by_name(
    classes: Sequence[str] | None, data_classes: Sequence[str], *, classes_name: str, data_name: str
) -> tuple[list[str], list[int]]:
    """Match the class names to prompt with to a labelled set's own class names, by name.

    Args:
        classes: the names given (`--classes`, `eval.classes`), in any order; None: the data's own names.
        data_classes: the data's class names, indexed by its labels (sorted folder names, a label column's names).
        classes_name, data_name: what gave each list, named in the error.

    Returns:
        The names in classifier order, and for each data label the classifier row of its class
        (``[new_label[label] for label in labels]`` gives labels that index the returned names).

    Raises:
        ValueError: naming both lists when they are not the same set of names.
    """
    if classes is None:
        return list(data_classes), list(range(len(data_classes)))
    if sorted(classes) != sorted(data_classes):
        problems = {
            "repeated": sorted({name for name in classes if list(classes).count(name) > 1}),
            "not in the data": sorted(set(classes) - set(data_classes)),
            "missing": sorted(set(data_classes) - set(classes)),
        }
        details = [f"{problem}: {names}" for problem, names in problems.items() if names]
        raise ValueError(
            f"{classes_name} {list(classes)} ({len(classes)} names) must be the class names of {data_name} "
            f"{list(data_classes)} ({len(data_classes)} classes), in any order ({'; '.join(details)}): labels are "
            "matched to class names by name"
        )
    row = {name: i for i, name in enumerate(classes)}
    return list(classes), [row[name] for name in data_classes]


def zero_shot_metrics(
    image_embeddings: torch.Tensor, labels: Sequence[int], classifier: torch.Tensor
) -> tuple[dict[str, float], torch.Tensor]:
    """Top-1, top-5 and mean per-class recall of ``argmax(image @ classifier.T)``; also the predictions (any
    modality's embeddings: images, audio clips)."""
    scores = F.normalize(image_embeddings.float(), dim=-1) @ classifier.T
    target = torch.as_tensor(list(labels))
    ranked = scores.topk(min(5, classifier.shape[0]), dim=1).indices
    predictions = ranked[:, 0]
    recalls = [
        (predictions[target == c] == c).float().mean().item() for c in range(classifier.shape[0]) if (target == c).any()
    ]
    metrics = {
        "top1": (predictions == target).float().mean().item(),
        "top5": (ranked == target[:, None]).any(dim=1).float().mean().item(),
        "mean_per_class_recall": float(np.mean(recalls)),
    }
    return metrics, predictions


def image_text_retrieval(image_embeddings: torch.Tensor, captions: Sequence[str], encoder: DualEncoder) -> dict:
    """Recall@1/5/10 of image -> text and text -> image over paired data (identical captions all count)."""
    distinct = list(dict.fromkeys(captions))
    position = {caption: i for i, caption in enumerate(distinct)}
    text_embeddings = encoder.encode_texts(distinct)
    image_to_text = retrieval_metrics(image_embeddings, text_embeddings, [{position[c]} for c in captions])
    images_of = [set() for _ in distinct]
    for image, caption in enumerate(captions):
        images_of[position[caption]].add(image)
    text_to_image = retrieval_metrics(text_embeddings, image_embeddings, images_of)
    keys = ("recall@1", "recall@5", "recall@10")
    return {f"image_to_text/{k}": image_to_text[k] for k in keys} | {
        f"text_to_image/{k}": text_to_image[k] for k in keys
    }


def modality_text_retrieval(
    embeddings: torch.Tensor, captions: Sequence[str], encoder: AudioTextEncoder | DualEncoder, modality: str
) -> dict[str, float]:
    """Recall@1/5/10 of ``modality`` -> text and text -> ``modality`` (audio, video) over paired data (identical
    captions all count); keys as :func:`image_text_retrieval` gives them, with the modality's name."""
    metrics = image_text_retrieval(embeddings, captions, encoder)  # type: ignore[arg-type]
    return {key.replace("image", modality): value for key, value in metrics.items()}


def logit_scale(encoder: DualEncoder | AudioTextEncoder) -> float:
    """The trained scale (1 / temperature) of a loaded dual encoder, for softmax scores over classes."""
    model = getattr(encoder, "model", None)
    if model is not None and hasattr(model, "logit_scale_a"):  # transformers ClapModel: the audio -> text scale
        return float(model.logit_scale_a.detach().exp())
    if model is not None:  # transformers and open_clip keep log(scale)
        return float(model.logit_scale.detach().exp())
    return float(encoder.logit_scale().detach())  # mmcontrast's CLIP: a LogitScale module
