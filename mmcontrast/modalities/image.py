"""Image adapter: a vision backbone from timm, torchvision, transformers or open_clip, with its preprocessing.

``ImageEncoder.create(name)`` picks the library by prefix:

- ``timm/<model>``        ``timm.create_model(model, num_classes=0)`` (pooled features);
- ``torchvision/<model>`` ``torchvision.models.get_model(model)`` with its classifier replaced by identity;
- ``open_clip/<model>``   the visual tower of ``open_clip.create_model(model)`` (already projected);
- a folder with ``config.json`` -> a transformers vision model (``AutoModel``), pooled by ``pooler_output``
  when it has one, else the first (CLS) token.

Backbones start randomly initialised; ``weights=`` loads a local safetensors / PyTorch state dict, and
``pretrained=`` the library's own pretrained weights by name (a timm tag, a torchvision weights enum member, an
open_clip tag: :mod:`mmcontrast.modalities.pretrained_weights`), read from the library's cache and downloaded
when missing. Preprocessing (input size, mean, std) comes from the backbone's own config, or from its pretrained
weights' when it has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torchvision.transforms import v2

from mmcontrast.modalities import pretrained_weights
from mmcontrast.modalities.saved_encoder import read_saved_encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a local ``.safetensors`` file or a PyTorch state dict (loaded with ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file '{path}' does not exist")
    if path.suffix == ".safetensors":
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as a new 8-bit RGB image, its pixel values scaled by what they mean.

    16-bit images (modes ``I;16*``) are divided by 257 (65535 -> 255). 32-bit integer images (mode ``I``) are
    taken as 8-bit when their values lie in 0..255, as 16-bit when they lie in 0..65535, and are min-max scaled
    otherwise. Float images (mode ``F``) are multiplied by 255 when their values lie in [0, 1] and are min-max
    scaled otherwise (NaN becomes 0). Every other mode (palette, L, LA, RGBA, CMYK, ...) is converted by PIL.
    """
    if image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64) / 257.0
    elif image.mode in ("I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        finite = pixels[np.isfinite(pixels)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        if image.mode == "F":
            in_range, scale = low >= 0 and high <= 1, 255.0
        else:
            in_range, scale = low >= 0 and high <= 65535, 1.0 if high <= 255 else 1 / 257.0
        if in_range:
            pixels = pixels * scale
        elif high > low:
            pixels = (pixels - low) * (255.0 / (high - low))
        pixels = np.nan_to_num(pixels, nan=0.0)
    else:
        return image.convert("RGB")
    gray = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def image_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Evaluation preprocessing: RGB, resize the short side, centre crop, scale to [0, 1], normalise."""
    return v2.Compose(
        [
            v2.Lambda(lambda image: to_rgb(image) if isinstance(image, Image.Image) else image),
            v2.ToImage(),
            v2.Resize(image_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


class ImageEncoder(nn.Module):
    """A vision backbone mapping ``[B, 3, H, W]`` pixels to ``[B, d]`` features.

    Args:
        backbone: the vision model.
        kind: ``timm``, ``torchvision``, ``open_clip`` or ``transformers`` (how to call it and pool).
        embedding_dim: size of the features it returns.
        image_size: side of the square input.
        mean, std: normalisation of the input.
        name: what it was created from (kept for export and model cards).
    """

    def __init__(
        self,
        backbone: nn.Module,
        kind: str,
        embedding_dim: int,
        image_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        name: str = "",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.kind = kind
        self.embedding_dim = embedding_dim
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.name = name
        self.transform = image_transform(image_size, self.mean, self.std)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        image_size: int | None = None,
        weights: str | None = None,
        pretrained: bool | str = False,
        pretrained_key: str = "pretrained",
        **options,
    ) -> ImageEncoder:
        """Build the backbone named ``name`` (see the module docstring); ``options`` go to its constructor.

        Args:
            name: ``timm/<model>``, ``torchvision/<model>``, ``open_clip/<model>`` or a transformers folder.
            image_size: input side (default: the backbone's, or its pretrained weights').
            weights: a local safetensors / PyTorch state dict of the backbone.
            pretrained: the library's pretrained weights by name (see
                :mod:`mmcontrast.modalities.pretrained_weights`): ``True`` for its default weights, or a timm
                tag, a torchvision weights enum member, an open_clip tag. Read from the library's cache,
                downloaded when missing; preprocessing (mean, std, default size) follows the weights.
            pretrained_key: how errors name the ``pretrained`` setting (a recipe passes its dotted key).
        """
        library, _, model = name.partition("/")
        if pretrained is not False and weights:
            raise ValueError(f"{pretrained_key}: give pretrained weights by name or a local weights file, not both")
        if pretrained is not False and library not in ("timm", "torchvision", "open_clip"):
            raise ValueError(
                f"{pretrained_key} is for timm/, torchvision/ and open_clip/ backbones; '{name}' brings its own weights"
            )
        if library == "timm" and model:
            import timm

            extra = {"img_size": image_size} if image_size and "vit" in model else {}
            if pretrained is False:
                backbone = timm.create_model(model, pretrained=False, num_classes=0, **extra, **options)
            else:
                tagged = pretrained_weights.timm_pretrained_name(model, pretrained, pretrained_key)
                backbone = pretrained_weights.fetch_timm(
                    lambda: timm.create_model(tagged, pretrained=True, num_classes=0, **extra, **options),
                    tagged,
                    pretrained_key,
                )
            config = timm.data.resolve_data_config({}, model=backbone)  # the (pretrained) weights' own
            size = image_size or config["input_size"][-1]
            encoder = cls(backbone, "timm", backbone.num_features, size, config["mean"], config["std"], name)
        elif library == "torchvision" and model:
            import torchvision

            mean, std, size = IMAGENET_MEAN, IMAGENET_STD, image_size or 224
            if pretrained is False:
                backbone = torchvision.models.get_model(model, weights=None, **options)
            else:
                enum = pretrained_weights.torchvision_weights(model, pretrained, pretrained_key)
                backbone = pretrained_weights.fetch_torchvision(
                    lambda: torchvision.models.get_model(model, weights=enum, **options), enum, pretrained_key
                )
                transform = enum.transforms()  # the weights' own preprocessing
                mean, std, size = transform.mean, transform.std, image_size or transform.crop_size[0]
            for head in ("fc", "classifier", "heads"):
                if hasattr(backbone, head):
                    setattr(backbone, head, nn.Identity())
                    break
            with torch.no_grad():
                backbone.eval()
                dim = backbone(torch.zeros(2, 3, size, size)).shape[-1]
                backbone.train()
            encoder = cls(backbone, "torchvision", dim, size, mean, std, name)
        elif library == "open_clip" and model:
            import open_clip

            tag = None
            if pretrained is not False:
                tag_config = pretrained_weights.open_clip_pretrained_cfg(model, pretrained, pretrained_key)
                pretrained_weights.fetch_open_clip(model, pretrained, tag_config, pretrained_key)
                tag = pretrained  # now cached: open_clip loads it and takes the tag's preprocessing
                if tag_config.get("quick_gelu"):
                    options["force_quick_gelu"] = True  # the activation the weights were trained with
            visual = open_clip.create_model(model, pretrained=tag, **options).visual
            size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
            config = visual.preprocess_cfg
            encoder = cls(visual, "open_clip", visual.output_dim, size, config["mean"], config["std"], name)
        elif (Path(name) / "config.json").is_file():
            encoder = cls.from_transformers(name)
        else:
            raise ValueError(
                f"image backbone '{name}' is not understood: use timm/<model>, torchvision/<model>, "
                "open_clip/<model> or a local transformers folder"
            )
        encoder.create_options = options  # recorded so that save_pretrained / from_pretrained rebuild the same model
        if weights:
            missing, unexpected = encoder.backbone.load_state_dict(load_state_dict(weights), strict=False)
            if unexpected or len(missing) == len(list(encoder.backbone.state_dict())):
                raise ValueError(
                    f"weights '{weights}' do not fit backbone '{name}' (unexpected keys: {unexpected[:5]}, "
                    f"missing: {missing[:5]})"
                )
        return encoder

    @classmethod
    def from_transformers(cls, source: str | Path | nn.Module) -> ImageEncoder:
        """A transformers vision model, from a folder or an instance (e.g. a tiny model built from a config)."""
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(str(source)) if not isinstance(source, nn.Module) else source
        config = backbone.config
        config = getattr(config, "vision_config", config)
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if isinstance(source, (str, Path)) and (Path(source) / "preprocessor_config.json").is_file():
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(str(source))
            mean, std = processor.image_mean, processor.image_std
        return cls(
            backbone, "transformers", config.hidden_size, size, mean, std, str(getattr(source, "name_or_path", source))
        )

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the backbone as a generic encoder folder: ``model.safetensors`` + ``config.json``.

        ``config.json`` holds what rebuilds the architecture (``kind``, backbone ``name``, constructor
        ``options``; for transformers backbones their config) and the preprocessing (``image_size``, ``mean``,
        ``std``). Nothing is pickled. :meth:`from_pretrained` loads the folder back.
        """
        import json

        from safetensors.torch import save_model

        directory = Path(directory)
        config: dict = {
            "format": "mmcontrast-image-encoder",
            "kind": self.kind,
            "name": self.name,
            "options": dict(getattr(self, "create_options", None) or {}),
            "embedding_dim": self.embedding_dim,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.kind == "transformers":
            transformers_config = self.backbone.config.to_dict()
            transformers_config.pop("auto_map", None)
            config["transformers_config"] = transformers_config
        elif self.kind not in ("timm", "torchvision", "open_clip") or not self.name.startswith(f"{self.kind}/"):
            raise ValueError(
                f"ImageEncoder.save_pretrained: a {self.kind!r} backbone named {self.name!r} cannot be rebuilt "
                "(expected timm/<model>, torchvision/<model>, open_clip/<model> or a transformers model)"
            )
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.backbone, str(directory / "model.safetensors"), metadata={"format": "pt"})
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ImageEncoder:
        """Load a folder written by :meth:`save_pretrained`, or a Hub repo id of one (in eval mode).

        The architecture is rebuilt from the libraries' own registries (timm, torchvision, open_clip, or a
        built-in transformers config class) and the weights are read from safetensors: no code from the folder
        is run and no pickle is loaded. From the Hub only ``config.json`` and ``model.safetensors`` are fetched.
        """

        from safetensors.torch import load_model

        config, config_path, weights_path = read_saved_encoder(
            directory,
            owner="ImageEncoder.from_pretrained",
            what="image encoder",
            format_name="mmcontrast-image-encoder",
            hint="a transformers model folder loads with ImageEncoder.create(folder)",
        )
        kind = config["kind"]
        if kind == "transformers":
            from transformers import CONFIG_MAPPING, AutoModel

            options = dict(config["transformers_config"])
            model_type = options.get("model_type")
            if model_type not in CONFIG_MAPPING:
                raise ValueError(f"'{config_path}': unknown transformers model_type {model_type!r}")
            backbone = AutoModel.from_config(CONFIG_MAPPING[model_type].from_dict(options))
            encoder = cls(backbone, kind, config["embedding_dim"], config["image_size"], name=config["name"])
        elif kind in ("timm", "torchvision", "open_clip"):
            if not str(config["name"]).startswith(f"{kind}/"):  # create() would read another folder
                raise ValueError(f"'{config_path}': a {kind} backbone is named {kind}/<model>, got {config['name']!r}")
            encoder = cls.create(config["name"], image_size=config["image_size"], **config.get("options", {}))
        else:
            raise ValueError(f"'{config_path}': unknown backbone kind {kind!r}")
        encoder.mean, encoder.std = tuple(config["mean"]), tuple(config["std"])
        encoder.transform = image_transform(encoder.image_size, encoder.mean, encoder.std)
        try:
            load_model(encoder.backbone, str(weights_path), strict=True)
        except RuntimeError as error:
            raise ValueError(f"'{weights_path}' does not fit the backbone of '{config_path}': {error}") from error
        return encoder.eval()

    def preprocess(self, images: Sequence[Image.Image | torch.Tensor]) -> torch.Tensor:
        """PIL images (or uint8 / float image tensors) -> a normalised ``[B, 3, S, S]`` batch."""
        return torch.stack([self.transform(image) for image in images])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, d]`` pooled features."""
        if self.kind != "transformers":
            return self.backbone(pixel_values)
        output = self.backbone(pixel_values=pixel_values)
        pooled = getattr(output, "pooler_output", None)
        return pooled if pooled is not None else output.last_hidden_state[:, 0]
