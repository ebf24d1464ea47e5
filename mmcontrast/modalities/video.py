"""Video adapter: clips -> frame embeddings ``[B, T, d]`` and clip embeddings ``[B, d]``.

:class:`VideoEncoder` applies an image tower (an :class:`~mmcontrast.modalities.image.ImageEncoder`) to every frame
(all valid frames of the batch in one ``[N, 3, S, S]`` call) and pools the frame embeddings over time:

- ``mean``: the mean over the valid frames;
- ``attention``: one learned query attends over the valid frames (``nn.MultiheadAttention`` with ``heads`` heads and
  a key padding mask);
- ``transformer``: a small temporal transformer (``layers``, ``heads``, pre-norm) over the frame embeddings plus a
  learned positional embedding (``max_frames`` positions), then the mean of its outputs over the valid frames.

**Position and time-contrastive losses.** Frame-level time-contrastive losses (positives are frames close in time,
negatives are frames far away) must use frame embeddings that cannot see a frame's position in the clip, or the
encoder can solve the task from the position alone instead of from the content. :meth:`VideoEncoder.encode_frames`
always returns the image tower's own per-frame outputs (for ``transformer`` pooling: *before* the temporal
transformer), and :attr:`VideoEncoder.sees_position` says whether the *clip* embedding depends on frame order: True for
``transformer`` (positional embedding), False for ``mean`` and ``attention`` (permutation invariant: shuffling the
frames leaves the clip embedding unchanged). A method that contrasts pooled embeddings of windows by time should
refuse an encoder with ``sees_position`` True.

**Padding.** :meth:`VideoEncoder.preprocess` pads clips of different lengths with zero frames and returns a
``frame_mask``. Padded frames never go through the image tower (their frame embeddings are zeros), and every pooling
ignores them, so a padded clip's embedding equals that of the clip alone (batch-norm towers in training mode included).

:meth:`VideoEncoder.save_pretrained` writes ``model.safetensors`` (tower and pooling weights) + ``config.json``
(``format: mmcontrast-video-encoder``, the pooling options and the image tower's own config);
:meth:`VideoEncoder.from_pretrained` rebuilds the tower through :meth:`ImageEncoder.from_pretrained` and loads the
weights without unpickling.

:func:`load_video_encoder` loads either kind of saved video tower: a folder of :meth:`VideoEncoder.save_pretrained`
or a transformers video model folder (VideoMAE, X-CLIP:
:class:`~mmcontrast.modalities.transformers_video.TransformersVideoEncoder`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.modalities.saved_encoder import read_saved_encoder

POOLINGS = ("mean", "attention", "transformer")
_CONFIG_FORMAT = "mmcontrast-video-encoder"
_TOWER_PREFIX = "image_encoder."
_SHAPES = "videos must be float [B, T, 3, H, W] (preprocessed) or uint8 [B, T, H, W, 3]"


def masked_mean(frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, d]`` -> ``[B, d]``: the mean over the frames where ``frame_mask`` ``[B, T]`` is True."""
    weights = frame_mask.to(frames.dtype)[..., None]
    return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


def checked_clip(owner: str, index: int, clip: Any) -> torch.Tensor:
    """``clip`` as a tensor, if it is a uint8 ``[T, H, W, 3]`` clip with ``T >= 1``; else an error naming it."""
    clip = torch.as_tensor(clip)
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.shape[0] < 1 or clip.dtype != torch.uint8:
        raise ValueError(
            f"{owner}: clip {index} must be uint8 [T, H, W, 3] with T >= 1, got {clip.dtype} {list(clip.shape)}"
        )
    return clip


class VideoEncoder(nn.Module):
    """An image tower per frame, then temporal pooling (see the module docstring).

    Args:
        image_encoder: the frame tower (its ``preprocess`` and ``image_size`` are used for the frames).
        pooling: ``mean``, ``attention`` or ``transformer``.
        layers: temporal transformer layers (``transformer``).
        heads: attention heads (``attention`` and ``transformer``); must divide the tower's ``embedding_dim``.
        max_frames: positions of the learned positional embedding (``transformer``); longer clips are an error.
        dropout: dropout inside the temporal transformer.
    """

    def __init__(
        self,
        image_encoder: ImageEncoder,
        pooling: str = "mean",
        *,
        layers: int = 2,
        heads: int = 4,
        max_frames: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"video encoder pooling must be one of {POOLINGS}, got {pooling!r}")
        self.image_encoder = image_encoder
        self.pooling = pooling
        self.embedding_dim = int(image_encoder.embedding_dim)
        dim = self.embedding_dim
        self.options: dict[str, Any] = {}
        if pooling in ("attention", "transformer"):
            if heads < 1 or dim % heads:
                raise ValueError(f"video encoder: heads ({heads}) must divide the embedding dim ({dim})")
            self.options["heads"] = int(heads)
        if pooling == "attention":
            self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
            self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        elif pooling == "transformer":
            if layers < 1 or max_frames < 1:
                raise ValueError(f"video encoder: layers and max_frames must be >= 1, got {layers} and {max_frames}")
            self.options.update(layers=int(layers), max_frames=int(max_frames), dropout=float(dropout))
            self.position = nn.Parameter(torch.empty(1, max_frames, dim))
            nn.init.trunc_normal_(self.position, std=0.02)
            layer = nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True, norm_first=True
            )
            self.temporal = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)

    @property
    def sees_position(self) -> bool:
        """Whether the clip embedding depends on the frames' order (``transformer``: True; ``mean``,
        ``attention``: False). Frame-level time-contrastive losses need encoders that cannot see position."""
        return self.pooling == "transformer"

    @property
    def frames_see_position(self) -> bool:
        """Whether :meth:`encode_frames` can see where a frame sits in its clip: never (each frame goes through the
        image tower alone), so the frame embeddings are fit for frame-level time-contrastive losses."""
        return False

    @property
    def image_size(self) -> int:
        """Side of the square frames the tower takes."""
        return int(self.image_encoder.image_size)

    def preprocess(self, clips: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """uint8 clips ``[T_i, H, W, 3]`` (as :func:`~mmcontrast.data.video.decode_clip` gives) -> a padded batch.

        Each clip's frames go through the tower's own preprocessing in one batched call (resize the short side,
        centre crop, scale, normalise; identical to the tower's ``preprocess`` frame by frame).

        Returns:
            ``pixel_values`` float ``[B, T_max, 3, S, S]`` (zero frames after each clip's end) and ``frame_mask``
            bool ``[B, T_max]`` (True on real frames).
        """
        if len(clips) == 0:
            raise ValueError("VideoEncoder.preprocess: no clips to batch")
        frames = []
        for index, clip in enumerate(clips):
            clip = checked_clip("VideoEncoder.preprocess", index, clip)
            frames.append(self.image_encoder.transform(clip.permute(0, 3, 1, 2)).as_subclass(torch.Tensor))
        lengths = torch.tensor([len(clip) for clip in frames])
        longest = int(lengths.max())
        size = frames[0].shape[1:]
        pixels = torch.zeros(len(frames), longest, *size, dtype=frames[0].dtype)
        for row, clip in enumerate(frames):
            pixels[row, : len(clip)] = clip
        mask = torch.arange(longest)[None, :] < lengths[:, None]
        return {"pixel_values": pixels, "frame_mask": mask}

    def _check(self, videos: torch.Tensor, frame_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float ``[B, T, 3, H, W]`` pixels and a bool ``[B, T]`` mask on their device (uint8 input preprocessed)."""
        if not isinstance(videos, torch.Tensor) or videos.ndim != 5:
            shape = list(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
            raise ValueError(f"VideoEncoder: {_SHAPES}, got {shape}")
        if videos.dtype == torch.uint8:
            if videos.shape[-1] != 3:
                raise ValueError(f"VideoEncoder: {_SHAPES}; got uint8 {list(videos.shape)} (last axis is not 3)")
            batch, steps = videos.shape[:2]
            flat = videos.reshape(batch * steps, *videos.shape[2:]).permute(0, 3, 1, 2)
            pixels = self.image_encoder.transform(flat.cpu()).as_subclass(torch.Tensor)
            videos = pixels.reshape(batch, steps, *pixels.shape[1:]).to(videos.device)
        elif not videos.is_floating_point() or videos.shape[2] != 3:
            raise ValueError(f"VideoEncoder: {_SHAPES}; got {videos.dtype} {list(videos.shape)}")
        batch, steps = videos.shape[:2]
        if frame_mask is None:
            frame_mask = torch.ones(batch, steps, dtype=torch.bool, device=videos.device)
        elif tuple(frame_mask.shape) != (batch, steps):
            raise ValueError(
                f"VideoEncoder: frame_mask must be [B, T] = {[batch, steps]} for videos {list(videos.shape)}, got "
                f"{list(frame_mask.shape)}"
            )
        frame_mask = frame_mask.to(device=videos.device).bool()
        empty = (~frame_mask.any(dim=1)).nonzero()
        if len(empty):
            raise ValueError(f"VideoEncoder: clip {int(empty[0])} has no valid frame in frame_mask")
        return videos, frame_mask

    def _frames(self, videos: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        batch, steps = videos.shape[:2]
        flat = videos.reshape(batch * steps, *videos.shape[2:])
        keep = frame_mask.reshape(-1)
        if bool(keep.all()):
            return self.image_encoder(flat).reshape(batch, steps, -1)
        embedded = self.image_encoder(flat[keep])  # padded frames never reach the tower
        out = embedded.new_zeros(batch * steps, embedded.shape[-1])
        out[keep] = embedded
        return out.reshape(batch, steps, -1)

    def encode_frames(self, pixel_values: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame embeddings ``[B, T, d]``: the image tower's outputs (zeros on padded frames).

        ``pixel_values`` is float ``[B, T, 3, H, W]`` (already preprocessed: ``encoder.encode_frames(**batch)`` with
        ``batch = encoder.preprocess(clips)``) or uint8 ``[B, T, H, W, 3]`` (preprocessed here). For ``transformer``
        pooling these are the frames *before* the temporal transformer, so they never see a frame's position.
        """
        videos, frame_mask = self._check(pixel_values, frame_mask)
        return self._frames(videos, frame_mask)

    def pool(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frame embeddings ``[B, T, d]`` -> clip embeddings ``[B, d]`` (the valid frames only)."""
        if frames.ndim != 3:
            raise ValueError(f"VideoEncoder.pool: frames must be [B, T, d], got {list(frames.shape)}")
        if frame_mask is None:
            frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        frame_mask = frame_mask.to(frames.device).bool()
        if self.pooling == "mean":
            return masked_mean(frames, frame_mask)
        if self.pooling == "attention":
            query = self.query.expand(len(frames), -1, -1).to(frames.dtype)
            pooled, _ = self.attention(query, frames, frames, key_padding_mask=~frame_mask, need_weights=False)
            return pooled[:, 0]
        steps, limit = frames.shape[1], self.position.shape[1]
        if steps > limit:
            raise ValueError(f"VideoEncoder: clips of {steps} frames exceed the transformer's max_frames ({limit})")
        hidden = self.temporal(frames + self.position[:, :steps].to(frames.dtype), src_key_padding_mask=~frame_mask)
        return masked_mean(self.norm(hidden), frame_mask)

    def forward(
        self, pixel_values: torch.Tensor | Mapping[str, torch.Tensor], frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Clip embeddings ``[B, d]``: :meth:`encode_frames` then :meth:`pool` (inputs as :meth:`encode_frames`, or
        the dict :meth:`preprocess` returns, as a two-tower method passes it)."""
        if isinstance(pixel_values, Mapping):
            return self.forward(**pixel_values)
        videos, frame_mask = self._check(pixel_values, frame_mask)
        return self.pool(self._frames(videos, frame_mask), frame_mask)

    def config_dict(self, image_config: dict[str, Any]) -> dict[str, Any]:
        """What rebuilds this encoder: the format, pooling, its options and the image tower's config."""
        return {
            "format": _CONFIG_FORMAT,
            "pooling": self.pooling,
            "options": dict(self.options),
            "embedding_dim": self.embedding_dim,
            "image_encoder": image_config,
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` (all weights) + ``config.json`` (:meth:`config_dict`); nothing is pickled."""
        from safetensors.torch import save_model

        with tempfile.TemporaryDirectory() as scratch:  # the tower's own config, as ImageEncoder writes it
            image_config = json.loads((self.image_encoder.save_pretrained(scratch) / "config.json").read_text())
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / "model.safetensors"), metadata={"format": "pt"})
        (directory / "config.json").write_text(json.dumps(self.config_dict(image_config), indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VideoEncoder:
        """Load a folder written by :meth:`save_pretrained`, or a Hub repo id of one (in eval mode).

        The tower is rebuilt by :meth:`ImageEncoder.from_pretrained` from the config's ``image_encoder`` entry and
        the tower's weights; then every weight is read from safetensors: no code runs and no pickle is read.
        """
        from safetensors.torch import load_file, load_model, save_file

        config, config_path, weights_path = read_saved_encoder(
            directory,
            owner="VideoEncoder.from_pretrained",
            what="video encoder",
            format_name=_CONFIG_FORMAT,
            hint="an image encoder folder loads with ImageEncoder.from_pretrained(folder)",
        )
        prefix = _TOWER_PREFIX + "backbone."
        tower = {key[len(prefix) :]: value for key, value in load_file(weights_path).items() if key.startswith(prefix)}
        if not isinstance(config.get("image_encoder"), dict) or not tower:
            raise ValueError(f"'{config_path}' / '{weights_path}' hold no image tower (config 'image_encoder')")
        with tempfile.TemporaryDirectory() as scratch:
            save_file(tower, str(Path(scratch) / "model.safetensors"), metadata={"format": "pt"})
            (Path(scratch) / "config.json").write_text(json.dumps(config["image_encoder"]))
            image_encoder = ImageEncoder.from_pretrained(scratch)
        encoder = cls(image_encoder, config["pooling"], **config.get("options", {}))
        try:
            load_model(encoder, str(weights_path), strict=True)
        except RuntimeError as error:
            raise ValueError(f"'{weights_path}' does not fit the encoder of '{config_path}': {error}") from error
        return encoder.eval()


def load_video_encoder(directory: str | Path) -> nn.Module:
    """The video encoder saved in a local folder, by its format (in eval mode).

    ``config.json`` with ``format: mmcontrast-video-encoder`` loads with :meth:`VideoEncoder.from_pretrained`; a
    transformers video model (``model_type`` ``videomae`` or ``xclip``, with or without ``mmcontrast_video.json``)
    with :meth:`~mmcontrast.modalities.transformers_video.TransformersVideoEncoder.from_pretrained`. Any other
    folder is an error that says what it holds.
    """
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"load_video_encoder: '{config_path}' does not exist (give a local folder written by a video encoder's "
            "save_pretrained, or a transformers video model folder)"
        )
    config = json.loads(config_path.read_text())
    if config.get("format") == _CONFIG_FORMAT:
        return VideoEncoder.from_pretrained(directory)
    from mmcontrast.modalities.transformers_video import VIDEO_MODEL_TYPES, TransformersVideoEncoder

    if "format" not in config and config.get("model_type") in VIDEO_MODEL_TYPES:
        return TransformersVideoEncoder.from_pretrained(directory)
    raise ValueError(
        f"load_video_encoder: '{config_path}' is not a video encoder (format {config.get('format')!r}, model_type "
        f"{config.get('model_type')!r}); expected format {_CONFIG_FORMAT!r} (VideoEncoder.save_pretrained) or a "
        f"transformers video model (model_type {' or '.join(VIDEO_MODEL_TYPES)})"
    )
