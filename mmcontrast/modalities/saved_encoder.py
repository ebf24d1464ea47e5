"""The folder an adapter's ``save_pretrained`` writes (``config.json`` + ``model.safetensors``), found and read
for ``from_pretrained``: a local folder, or a Hub repo id whose two files are downloaded (nothing else is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_saved_encoder(
    directory: str | Path, *, owner: str, what: str, format_name: str, hint: str
) -> tuple[dict[str, Any], Path, Path]:
    """``(config, config_path, weights_path)`` of a saved encoder folder, refusing another format.

    Args:
        directory: a local folder or a Hub repo id (``user/name``).
        owner: who is loading, for the messages (``ImageEncoder.from_pretrained``).
        what: what the folder should hold, for the messages (``image encoder``).
        format_name: the ``format`` the config must hold.
        hint: what to do with a folder of another format.
    """
    if not Path(directory).exists() and str(directory).count("/") == 1:  # a Hub repo id
        from huggingface_hub import snapshot_download

        directory = snapshot_download(str(directory), allow_patterns=["config.json", "model.safetensors"])
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{owner}: '{path}' does not exist")
    config = json.loads(config_path.read_text())
    if config.get("format") != format_name:
        found = config.get("format")
        raise ValueError(f"'{config_path}' is not an mmcontrast {what} config (format {found!r}); {hint}")
    return config, config_path, weights_path
