"""Hub: one module per ecosystem format (save and load side by side), model cards, and push.

Formats: ``transformers_clip`` (transformers ``CLIPModel`` / ``VisionTextDualEncoderModel`` folders: export and
``TransformersDualEncoder``), ``transformers_clap`` (transformers ``ClapModel`` folders: export and
``TransformersClapEncoder``), ``open_clip_folder`` (open_clip's ``local-dir:`` / ``hf-hub:`` layout:
``save_open_clip`` and ``OpenClipDualEncoder``), ``open_clip_to_transformers`` (open_clip towers as a
``CLIPModel``), ``mmcontrast_clip`` (mmcontrast's own two-tower format) and ``dual_encoders``
(``load_dual_encoder`` / ``load_audio_text_encoder``: any exported two-tower folder, recognised by
``folders``). Sentence-transformers folders
are written and read by :class:`mmcontrast.modalities.text.TextEncoder`, image encoders by
:class:`mmcontrast.modalities.image.ImageEncoder`.
"""

from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.hub.push import PushError, push_model

__all__ = ["CardInfo", "PushError", "push_model", "training_curve", "write_model_card"]
