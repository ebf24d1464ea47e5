"""transformers video models as video towers: VideoMAE and the video side of X-CLIP.

:class:`TransformersVideoEncoder` has the interface of :class:`~mmcontrast.modalities.video.VideoEncoder`
(``embedding_dim``, ``image_size``, ``sees_position``, ``preprocess``, ``encode_frames``, ``forward``,
``save_pretrained`` / ``from_pretrained``), so a method can use either. It wraps

- ``videomae``: a ``VideoMAEModel``. Clip embedding: the mean of its output tokens (the model applies its final
  layer norm first when ``use_mean_pooling`` is False; the ``fc_norm`` of ``use_mean_pooling`` checkpoints belongs
  to ``VideoMAEForVideoClassification``'s head and is not part of the tower). Frame embeddings: the mean of the
  patch tokens of each temporal slot, so ``T' = num_frames / tubelet_size`` of them (``frame_stride`` frames each).
- ``xclip``: :class:`XCLIPVideoModel`, the video path of ``XCLIPModel.get_video_features`` without the text side:
  the cross-frame vision model (its message tokens mix the frames of a clip) on every frame, the visual
  projection, then the multi-frame integration transformer (MIT), whose mean is the clip embedding
  (``projection_dim`` wide). Frame embeddings: the projected per-frame features the MIT takes (``T' = T``).
  ``XCLIPVisionModel`` alone has neither the projection nor the MIT, which ``XCLIPModel`` holds, hence this class;
  its weight names are ``XCLIPModel``'s, so it loads an ``XCLIPModel`` folder (the text weights are left out).

**Frames.** Both models take exactly ``num_frames`` frames (``config.num_frames``; X-CLIP:
``vision_config.num_frames``): VideoMAE's positional embeddings and X-CLIP's message tokens and MIT positions are
sized for it. :meth:`TransformersVideoEncoder.preprocess` therefore maps every clip to ``num_frames`` frames with
:func:`frame_indices` (shorter clips: the last frame repeated; longer clips: uniformly subsampled), so its
``frame_mask`` is all True, and a clip's embedding does not depend on the other clips of the batch. ``encode_frames``
and ``forward`` apply the same mapping to the valid frames of any ``[B, T]`` batch and mask they are given (a
:class:`~mmcontrast.modalities.video.VideoEncoder` batch included).

**Position.** ``sees_position`` is True: both models embed time (VideoMAE: positional embeddings of the tubelets,
X-CLIP: the MIT's). ``frames_see_position`` is True too: their *frame* embeddings see position (VideoMAE's tokens
carry positional embeddings, X-CLIP's frames carry the message tokens of the whole clip), so frame-level
time-contrastive losses need a :class:`~mmcontrast.modalities.video.VideoEncoder` with an image tower instead.

**Preprocessing.** Frames are resized (short side), centre cropped to the model's ``image_size`` and normalised
with the ``image_mean`` / ``image_std`` of the folder's ``preprocessor_config.json`` (or
``video_preprocessor_config.json``) when there is one, else the ImageNet statistics. Nothing is downloaded.

**Saved folders.** :meth:`TransformersVideoEncoder.save_pretrained` writes a transformers model folder,
``config.json`` + ``model.safetensors`` (``model.save_pretrained``), plus ``mmcontrast_video.json``
(``format: mmcontrast-transformers-video-encoder``, ``model_type``, the normalisation ``mean`` and ``std``).
A VideoMAE folder also loads with ``AutoModel.from_pretrained``; an X-CLIP folder holds the video weights only
(``XCLIPModel.from_pretrained`` would initialise its text side randomly).
:meth:`TransformersVideoEncoder.from_pretrained` loads these folders and plain transformers folders
(``AutoModel`` / ``XCLIPModel.save_pretrained``) from safetensors only: no pickle is read and no code from the
folder is run.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CONFIG_MAPPING, PreTrainedConfig, VideoMAEModel, XCLIPConfig
from transformers import initialization as hf_init
from transformers.models.x_clip.modeling_x_clip import (
    XCLIPMultiframeIntegrationTransformer,
    XCLIPPreTrainedModel,
    XCLIPVisionModel,
)

from mmcontrast.modalities.image import IMAGENET_MEAN, IMAGENET_STD, image_transform
from mmcontrast.modalities.video import checked_clip

VIDEO_MODEL_TYPES = ("videomae", "xclip")
"""``model_type`` values of the transformers video models :class:`TransformersVideoEncoder` wraps."""
WRAPPER_FILE = "mmcontrast_video.json"
"""The file :meth:`TransformersVideoEncoder.save_pretrained` adds next to the transformers ``config.json``."""
_FORMAT = "mmcontrast-transformers-video-encoder"
_PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")
_SHAPES = "videos must be float [B, T, 3, H, W] (preprocessed) or uint8 [B, T, H, W, 3]"


def frame_indices(length: int, num_frames: int) -> torch.Tensor:
    """Which of a clip's ``length`` frames make up ``num_frames`` frames: all of them followed by the last one
    repeated when the clip is shorter, else the middle frame of each of ``num_frames`` equal segments."""
    if length < 1:
        raise ValueError(f"frame_indices: a clip needs at least one frame, got {length}")
    if length <= num_frames:
        return torch.arange(num_frames).clamp_max(length - 1)
    return ((torch.arange(num_frames) + 0.5) * (length / num_frames)).long()


class XCLIPVideoModel(XCLIPPreTrainedModel):
    """The video path of ``XCLIPModel`` alone: vision model per frame, visual projection, MIT.

    Its modules carry ``XCLIPModel``'s names (``vision_model``, ``visual_projection``, ``mit``), so
    ``XCLIPVideoModel.from_pretrained`` loads an ``XCLIPModel`` folder without its text side, and its clip
    embedding equals ``XCLIPModel.get_video_features(pixel_values).pooler_output``.

    Args:
        config: an ``XCLIPConfig``; ``projection_dim`` must equal ``vision_config.mit_hidden_size``.
    """

    # the text side of an XCLIPModel checkpoint, left out on purpose
    _keys_to_ignore_on_load_unexpected = (r"^text_model\.", r"^text_projection\.", r"^prompts_", r"^logit_scale$")

    def __init__(self, config: XCLIPConfig) -> None:
        super().__init__(config)
        vision = config.vision_config
        if config.projection_dim != vision.mit_hidden_size:
            raise ValueError(
                f"X-CLIP: projection_dim ({config.projection_dim}) must equal vision_config.mit_hidden_size "
                f"({vision.mit_hidden_size}): the MIT takes the projected frame features"
            )
        self.vision_model = XCLIPVisionModel(vision)
        self.visual_projection = nn.Linear(vision.hidden_size, config.projection_dim, bias=False)
        mit_config = copy.copy(vision)  # as XCLIPModel builds its MIT
        mit_config.hidden_size = vision.mit_hidden_size
        mit_config.intermediate_size = vision.mit_intermediate_size
        mit_config.num_hidden_layers = vision.mit_num_hidden_layers
        mit_config.num_attention_heads = vision.mit_num_attention_heads
        self.mit = XCLIPMultiframeIntegrationTransformer(mit_config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """XCLIPModel's initialisation, including that of the visual projection."""
        super()._init_weights(module)
        if module is getattr(self, "visual_projection", None):
            std = self.config.vision_config.hidden_size**-0.5 * self.config.initializer_factor
            hf_init.normal_(module.weight, std=std)  # skips weights loaded from a checkpoint

    def frame_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, num_frames, 3, S, S]`` -> projected per-frame features ``[B, num_frames, projection_dim]``."""
        batch, steps = pixel_values.shape[:2]
        pooled = self.vision_model(pixel_values=pixel_values.flatten(0, 1)).pooler_output
        return self.visual_projection(pooled).view(batch, steps, -1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, num_frames, 3, S, S]`` -> video embeddings ``[B, projection_dim]`` (the MIT's mean)."""
        return self.mit(self.frame_features(pixel_values)).pooler_output


def video_config(options: dict[str, Any] | PreTrainedConfig) -> PreTrainedConfig:
    """The transformers config of a video tower: a config, or a dict with ``model_type`` ``videomae``, ``xclip``
    or ``xclip_vision_model`` plus its sizes. An ``XCLIPVisionConfig`` becomes an ``XCLIPConfig`` whose
    ``projection_dim`` is the vision config's ``mit_hidden_size`` (the text side is never built)."""
    if isinstance(options, dict):
        options = dict(options)
        model_type = options.pop("model_type", None)
        if model_type not in (*VIDEO_MODEL_TYPES, "xclip_vision_model"):
            raise ValueError(
                f"video tower config: model_type must be videomae, xclip or xclip_vision_model, got {model_type!r}"
            )
        options = CONFIG_MAPPING[model_type](**options)
    if options.model_type == "xclip_vision_model":
        return XCLIPConfig(vision_config=options.to_dict(), projection_dim=options.mit_hidden_size)
    if options.model_type not in VIDEO_MODEL_TYPES:
        raise ValueError(
            f"video tower config: a {type(options).__name__} (model_type {options.model_type!r}) is not a video "
            f"model; use one of {VIDEO_MODEL_TYPES}"
        )
    return options


def _processor_stats(folder: Path) -> tuple[Sequence[float], Sequence[float]]:
    """``image_mean`` / ``image_std`` of a folder's (video) preprocessor config, else the ImageNet statistics."""
    for name in _PROCESSOR_FILES:
        path = folder / name
        if path.is_file():
            processor = json.loads(path.read_text())
            if "image_mean" in processor and "image_std" in processor:
                return processor["image_mean"], processor["image_std"]
    return IMAGENET_MEAN, IMAGENET_STD


class TransformersVideoEncoder(nn.Module):
    """A VideoMAE or X-CLIP video model as a video tower (see the module docstring).

    Args:
        model: a ``VideoMAEModel`` or an :class:`XCLIPVideoModel`.
        mean, std: normalisation of the frames.
    """

    def __init__(
        self, model: nn.Module, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        if isinstance(model, VideoMAEModel):
            config = model.config
            self.embedding_dim = int(config.hidden_size)
            self.frame_stride = int(config.tubelet_size)
            if config.num_frames % self.frame_stride:
                raise ValueError(
                    f"VideoMAE: num_frames ({config.num_frames}) must be a multiple of tubelet_size "
                    f"({self.frame_stride})"
                )
        elif isinstance(model, XCLIPVideoModel):
            config = model.config.vision_config
            self.embedding_dim = int(model.config.projection_dim)
            self.frame_stride = 1
        else:
            raise TypeError(
                f"TransformersVideoEncoder wraps a VideoMAEModel or an XCLIPVideoModel, got {type(model).__name__}; "
                "load a folder with TransformersVideoEncoder.from_pretrained(folder)"
            )
        self.model = model
        self.model_type = model.config.model_type
        self.num_frames = int(config.num_frames)
        size = config.image_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.mean, self.std = tuple(mean), tuple(std)
        self.transform = image_transform(self.image_size, self.mean, self.std)

    @classmethod
    def from_config(cls, config: dict[str, Any] | PreTrainedConfig) -> TransformersVideoEncoder:
        """A randomly initialised tower from a transformers config or a dict (see :func:`video_config`)."""
        config = video_config(config)
        model = VideoMAEModel(config) if config.model_type == "videomae" else XCLIPVideoModel(config)
        return cls(model)

    @property
    def sees_position(self) -> bool:
        """Always True: the clip embedding depends on the frames' order (VideoMAE's and X-CLIP's MIT's positions)."""
        return True

    @property
    def frames_see_position(self) -> bool:
        """Always True: :meth:`encode_frames` sees where a frame sits in its clip (VideoMAE's positional
        embeddings, X-CLIP's message tokens), so frame-level time-contrastive losses must not use them."""
        return True

    def preprocess(self, clips: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """uint8 clips ``[T_i, H, W, 3]`` -> ``pixel_values`` float ``[B, num_frames, 3, S, S]`` and ``frame_mask``
        bool ``[B, num_frames]`` (all True): every clip is mapped to ``num_frames`` frames by :func:`frame_indices`,
        then resized, centre cropped and normalised."""
        if len(clips) == 0:
            raise ValueError("TransformersVideoEncoder.preprocess: no clips to batch")
        batch = []
        for index, clip in enumerate(clips):
            clip = checked_clip("TransformersVideoEncoder.preprocess", index, clip)
            frames = clip[frame_indices(len(clip), self.num_frames)].permute(0, 3, 1, 2)
            batch.append(self.transform(frames).as_subclass(torch.Tensor))
        pixels = torch.stack(batch)
        return {"pixel_values": pixels, "frame_mask": torch.ones(pixels.shape[:2], dtype=torch.bool)}

    def _check(self, videos: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """Float ``[B, num_frames, 3, S, S]`` pixels: uint8 input preprocessed, the valid frames of each clip mapped
        to ``num_frames`` frames as :meth:`preprocess` does."""
        if not isinstance(videos, torch.Tensor) or videos.ndim != 5:
            shape = list(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
            raise ValueError(f"TransformersVideoEncoder: {_SHAPES}, got {shape}")
        if videos.dtype == torch.uint8:
            if videos.shape[-1] != 3:
                raise ValueError(
                    f"TransformersVideoEncoder: {_SHAPES}; got uint8 {list(videos.shape)} (last axis is not 3)"
                )
            batch, steps = videos.shape[:2]
            flat = videos.reshape(batch * steps, *videos.shape[2:]).permute(0, 3, 1, 2)
            pixels = self.transform(flat.cpu()).as_subclass(torch.Tensor)
            videos = pixels.reshape(batch, steps, *pixels.shape[1:]).to(videos.device)
        elif not videos.is_floating_point() or videos.shape[2] != 3:
            raise ValueError(f"TransformersVideoEncoder: {_SHAPES}; got {videos.dtype} {list(videos.shape)}")
        batch, steps = videos.shape[:2]
        if frame_mask is None:
            frame_mask = torch.ones(batch, steps, dtype=torch.bool)
        elif tuple(frame_mask.shape) != (batch, steps):
            raise ValueError(
                f"TransformersVideoEncoder: frame_mask must be [B, T] = {[batch, steps]} for videos "
                f"{list(videos.shape)}, got {list(frame_mask.shape)}"
            )
        frame_mask = frame_mask.bool().cpu()
        if steps == self.num_frames and bool(frame_mask.all()):
            return videos
        rows = []
        for row, valid in enumerate(frame_mask):
            kept = valid.nonzero()[:, 0]
            if len(kept) == 0:
                raise ValueError(f"TransformersVideoEncoder: clip {row} has no valid frame in frame_mask")
            rows.append(kept[frame_indices(len(kept), self.num_frames)])
        return videos[torch.arange(batch)[:, None], torch.stack(rows).to(videos.device)]

    def encode_frames(self, pixel_values: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-time-step embeddings ``[B, T', d]`` with ``T' = num_frames / frame_stride``.

        VideoMAE: the mean of the patch tokens of each temporal slot (``frame_stride = tubelet_size`` frames);
        X-CLIP: the projected features of every frame, which the MIT pools. Inputs as :meth:`forward`.
        """
        videos = self._check(pixel_values, frame_mask)
        if isinstance(self.model, XCLIPVideoModel):
            return self.model.frame_features(videos)
        tokens = self.model(pixel_values=videos).last_hidden_state
        slots = self.num_frames // self.frame_stride
        return tokens.view(len(tokens), slots, -1, tokens.shape[-1]).mean(dim=2)

    def forward(
        self, pixel_values: torch.Tensor | Mapping[str, torch.Tensor], frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Clip embeddings ``[B, d]`` (VideoMAE: the mean of its tokens; X-CLIP: its video embedding).

        ``pixel_values`` is float ``[B, T, 3, H, W]`` (``encoder(**encoder.preprocess(clips))``), uint8
        ``[B, T, H, W, 3]`` (preprocessed here) or the dict :meth:`preprocess` returns (as a two-tower method passes
        it); the valid frames of each clip (``frame_mask`` ``[B, T]``, default: all) are mapped to ``num_frames``
        frames as :meth:`preprocess` does.
        """
        if isinstance(pixel_values, Mapping):
            return self.forward(**pixel_values)
        videos = self._check(pixel_values, frame_mask)
        if isinstance(self.model, XCLIPVideoModel):
            return self.model(videos)
        return self.model(pixel_values=videos).last_hidden_state.mean(dim=1)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the transformers model folder (``config.json`` + ``model.safetensors``) and ``mmcontrast_video.json``
        (``format``, ``model_type``, ``mean``, ``std``); nothing is pickled."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        wrapper = {"format": _FORMAT, "model_type": self.model_type, "mean": list(self.mean), "std": list(self.std)}
        (directory / WRAPPER_FILE).write_text(json.dumps(wrapper, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TransformersVideoEncoder:
        """Load a local folder written by :meth:`save_pretrained` or by a transformers ``save_pretrained`` of a
        VideoMAE or X-CLIP model (in eval mode).

        The config class is chosen from the built-in ``model_type`` (no remote code) and the weights are read from
        safetensors only (``model.safetensors`` or a sharded index); a folder with ``pytorch_model.bin`` alone is
        refused, as it would be unpickled.
        """
        folder = Path(directory)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"TransformersVideoEncoder.from_pretrained: '{config_path}' does not exist (give a local transformers "
                "video model folder)"
            )
        config = json.loads(config_path.read_text())
        model_type = config.get("model_type")
        if "format" in config or model_type not in VIDEO_MODEL_TYPES:
            raise ValueError(
                f"'{config_path}' is not a transformers video model config (format {config.get('format')!r}, "
                f"model_type {model_type!r}); TransformersVideoEncoder loads model_type "
                f"{' or '.join(VIDEO_MODEL_TYPES)} (load any saved video encoder with "
                "mmcontrast.modalities.video.load_video_encoder)"
            )
        if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
            raise FileNotFoundError(
                f"TransformersVideoEncoder.from_pretrained: '{folder}' holds no model.safetensors (pickled "
                "pytorch_model.bin weights are not loaded; convert them to safetensors)"
            )
        wrapper_path = folder / WRAPPER_FILE
        if wrapper_path.is_file():
            wrapper = json.loads(wrapper_path.read_text())
            if wrapper.get("format") != _FORMAT or wrapper.get("model_type") != model_type:
                raise ValueError(
                    f"'{wrapper_path}' does not describe the {model_type} model of '{config_path}' (format "
                    f"{wrapper.get('format')!r}, model_type {wrapper.get('model_type')!r}); delete it to use the "
                    "preprocessor config or ImageNet statistics"
                )
            mean, std = wrapper["mean"], wrapper["std"]
        else:
            mean, std = _processor_stats(folder)
        model_class = VideoMAEModel if model_type == "videomae" else XCLIPVideoModel
        model, loading = model_class.from_pretrained(str(folder), use_safetensors=True, output_loading_info=True)
        missing = sorted(loading["missing_keys"])
        if missing:
            raise ValueError(
                f"'{folder}' lacks {len(missing)} weights of its {model_type} video model (e.g. {missing[:3]}); "
                "save the whole model with save_pretrained"
            )
        return cls(model, mean, std).eval()
