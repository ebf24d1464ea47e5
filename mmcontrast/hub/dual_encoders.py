"""Load any folder a two-tower run exports, whatever its format, for zero-shot use and retrieval.

The folder is recognised by its marker files (:func:`mmcontrast.hub.folders.folder_kind`) and handed to the
loader of its format, each in its own module: an open_clip folder (:mod:`mmcontrast.hub.open_clip_folder`),
mmcontrast's own format (:mod:`mmcontrast.hub.mmcontrast_clip`) or a transformers dual encoder
(:mod:`mmcontrast.hub.transformers_clip`). The result is a :class:`~mmcontrast.evaluation.zero_shot.DualEncoder`
(``encode_images`` / ``encode_texts``). An audio-text folder, a transformers ``ClapModel``
(:mod:`mmcontrast.hub.transformers_clap`) or mmcontrast's own format with an audio tower, loads as an
:class:`~mmcontrast.evaluation.zero_shot.AudioTextEncoder` (``encode_audio`` / ``encode_texts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mmcontrast.hub.folders import check_model_folder, folder_kind
from mmcontrast.hub.mmcontrast_clip import MMCONTRAST_CLIP_FORMAT, load_mmcontrast_clip
from mmcontrast.hub.open_clip_folder import OpenClipDualEncoder
from mmcontrast.hub.transformers_clip import TransformersDualEncoder

if TYPE_CHECKING:
    from mmcontrast.evaluation.zero_shot import AudioTextEncoder, DualEncoder


def load_dual_encoder(folder: str | Path) -> DualEncoder | AudioTextEncoder:
    """Any folder a CLIP or CLAP run exports, loaded for zero-shot use: an open_clip folder (through open_clip),
    mmcontrast's own two-tower format, or a transformers dual encoder; an audio-text folder goes to
    :func:`load_audio_text_encoder`. Another folder (a text model, a training
    checkpoint, an empty one...) is an error that says what it is.

    An mmcontrast-format folder is rebuilt by its recipe's registered builder: import :mod:`mmcontrast.recipe`
    first (the CLI does).
    """
    path = Path(folder).expanduser()
    if path.is_dir() and folder_kind(path).kind == "audio-text":
        return load_audio_text_encoder(folder)
    check_model_folder(folder, "image-text")
    found = folder_kind(folder).format
    if found == "open_clip":
        return OpenClipDualEncoder(folder)
    if found == MMCONTRAST_CLIP_FORMAT:
        return load_mmcontrast_clip(folder)  # a CLIP method: encode_images / encode_texts
    return TransformersDualEncoder(folder)


def load_audio_text_encoder(folder: str | Path) -> AudioTextEncoder:
    """An exported audio-text folder, loaded for zero-shot use: a transformers ``ClapModel`` folder, or
    mmcontrast's own two-tower format with an audio tower (rebuilt by its recipe's builder: import
    :mod:`mmcontrast.recipe` first). Another folder is an error that says what it is."""
    from mmcontrast.hub.transformers_clap import TransformersClapEncoder

    check_model_folder(folder, "audio-text")
    if folder_kind(folder).format == MMCONTRAST_CLIP_FORMAT:
        return load_mmcontrast_clip(folder)  # type: ignore[return-value]  # a CLAP method: encode_audio / encode_texts
    return TransformersClapEncoder(folder)
