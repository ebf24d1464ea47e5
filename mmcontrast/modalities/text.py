"""Text adapter: a transformers encoder plus pooling, tokenising in the collator.

``TextEncoder.from_pretrained`` takes any local transformers encoder folder, a sentence-transformers folder
(its ``modules.json``, pooling and normalisation settings are read and honoured) or a hub name.
``save_pretrained`` writes a sentence-transformers folder, so ``SentenceTransformer(path)`` loads what
mmcontrast trained and gives the same embeddings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

Pooling = Literal["mean", "cls", "last", "pooler"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "last", "pooler")

# sentence-transformers' classic module names: every release from 2.x to 6.x loads these.
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"


def _read_sentence_transformers_folder(path: Path) -> dict:
    """Read pooling, normalisation, max length and the transformer sub-folder of a sentence-transformers folder."""
    modules = json.loads((path / "modules.json").read_text())
    found: dict = {"transformer_dir": path, "normalize": False}
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        module_dir = path / module["path"]
        if kind == "Transformer":
            found["transformer_dir"] = module_dir
            for name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
                if (module_dir / name).is_file():
                    config = json.loads((module_dir / name).read_text())
                    if "max_seq_length" in config:
                        found["max_length"] = config["max_seq_length"]
        elif kind == "Pooling":
            config = json.loads((module_dir / "config.json").read_text())
            found["pooling"] = _pooling_from_st_config(config, module_dir)
        elif kind == "Normalize":
            found["normalize"] = True
        else:
            raise ValueError(
                f"{path}/modules.json: module type '{module['type']}' is not supported by the text adapter "
                "(supported: Transformer, Pooling, Normalize)"
            )
    config_path = path / "config_sentence_transformers.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        found["prompts"] = dict(config.get("prompts") or {})
        found["default_prompt_name"] = config.get("default_prompt_name")
    return found


def _pooling_from_st_config(config: dict, where: Path) -> str:
    modes = config.get("pooling_mode")
    if isinstance(modes, str):
        modes = [modes]
    if modes is None:  # classic layout: one boolean per mode
        modes = [k.removeprefix("pooling_mode_") for k, v in config.items() if k.startswith("pooling_mode_") and v]
    aliases = {"mean_tokens": "mean", "mean": "mean", "cls_token": "cls", "cls": "cls", "lasttoken": "last"}
    if len(modes) != 1 or modes[0] not in aliases:
        raise ValueError(
            f"{where}/config.json: pooling mode {modes} is not supported; use one of mean, cls or last-token"
        )
    return aliases[modes[0]]


def _looks_like_path(name: str) -> bool:
    """A name that can only be a local path: a Hub repo id is ``name`` or ``org/name``, without a suffix."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or bool(Path(name).suffix)


def _load_error(name_or_path: str | Path, local: bool, error: OSError) -> str:
    """One line that says why a text model did not load, without the loader's multi-line advice."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if local:
        return f"could not load the text model folder '{name_or_path}': {first_line}"
    from huggingface_hub import is_offline_mode

    if is_offline_mode():
        return (
            f"text model '{name_or_path}' is not a local folder and not in the Hugging Face cache, and "
            "HF_HUB_OFFLINE is set so it cannot be downloaded: give a local transformers or sentence-transformers "
            "folder, or download the model once with network access"
        )
    return f"text model '{name_or_path}' is not a local folder and could not be loaded from the Hub: {first_line}"


class TextEncoder(nn.Module):
    """A transformers encoder with pooling: ``preprocess(texts)`` tokenises, ``forward(features)`` embeds.

    Args:
        transformer: a transformers model whose output has ``last_hidden_state``.
        tokenizer: its tokenizer.
        pooling: ``"mean"`` over non-padding tokens, ``"cls"`` (first token), ``"last"`` (last non-padding
            token) or ``"pooler"`` (the model's own ``pooler_output``: CLIP's end-of-text token, BERT's pooler).
        normalize: L2-normalise the pooled embedding.
        max_length: tokens kept per text (longer texts are truncated).
        prompts: prompt name -> text prepended to the texts encoded under that name (``{"query": "query: "}``);
            stored in, and read from, a sentence-transformers folder, where ``encode(..., prompt_name=...)`` uses
            them.
        default_prompt_name: the prompt sentence-transformers applies when ``encode`` is given none.
    """

    def __init__(
        self,
        transformer: nn.Module,
        tokenizer,
        pooling: Pooling = "mean",
        normalize: bool = False,
        max_length: int = 256,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling '{pooling}' is not supported; use one of {', '.join(POOLINGS)}")
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        pooling: Pooling | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
    ) -> TextEncoder:
        """Load a transformers or sentence-transformers folder (or hub name); explicit arguments win.

        Weights are read from safetensors only (never from a pickle). A name that is not a local folder is looked
        up on the Hugging Face Hub (its cache only, when ``HF_HUB_OFFLINE`` is set).
        """
        path = Path(name_or_path).expanduser()
        settings: dict = {}
        source: str | Path = path if path.exists() else name_or_path
        if path.is_dir() and (path / "modules.json").is_file():
            settings = _read_sentence_transformers_folder(path)
            source = settings.pop("transformer_dir")
        elif not path.exists() and _looks_like_path(str(name_or_path)):
            raise FileNotFoundError(f"text model folder '{name_or_path}' does not exist")
        if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
            raise FileNotFoundError(
                f"text model folder '{source}' has no config.json: it is not a transformers or sentence-transformers "
                "model folder"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source))
            transformer = AutoModel.from_pretrained(str(source), use_safetensors=True)
        except OSError as error:
            raise OSError(_load_error(name_or_path, Path(source).is_dir(), error)) from error
        if max_length is None:
            max_length = settings.get("max_length") or min(int(tokenizer.model_max_length), 512)
        return cls(
            transformer,
            tokenizer,
            pooling=pooling or settings.get("pooling", "mean"),
            normalize=settings.get("normalize", False) if normalize is None else normalize,
            max_length=max_length,
            prompts=settings.get("prompts"),
            default_prompt_name=settings.get("default_prompt_name"),
        )

    @property
    def embedding_dim(self) -> int:
        return int(self.transformer.config.hidden_size)

    def preprocess(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise a batch of texts, padded to the longest one."""
        return dict(
            self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        )

    def token_lengths(self, texts: Sequence[str], batch_size: int = 1024) -> list[int]:
        """The number of tokens each text takes in :meth:`preprocess` (special tokens included, after
        truncation), without building tensors."""
        lengths: list[int] = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            ids = self.tokenizer(batch, truncation=True, max_length=self.max_length)["input_ids"]
            lengths += [len(row) for row in ids]
        return lengths

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embed tokenised texts: [B, L] token ids -> [B, d] pooled embeddings."""
        output = self.transformer(**features)
        hidden, mask = output.last_hidden_state, features["attention_mask"]
        if self.pooling == "pooler":
            pooled = output.pooler_output
        elif self.pooling == "mean":
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # last non-padding token, whichever side the tokenizer pads
            positions = torch.arange(mask.shape[1], device=mask.device)
            last = (mask * positions).argmax(dim=1)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False, desc: str = "encode"
    ) -> torch.Tensor:
        """Embed texts for evaluation (eval mode, no gradient, fp32 on the CPU), in the order given."""
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        device = next(self.parameters()).device
        chunks = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=desc, disable=not show_progress, leave=False):
            batch = [texts[i] for i in order[start : start + batch_size]]
            features = {k: v.to(device) for k, v in self.preprocess(batch).items()}
            chunks.append(self(features).float().cpu())
        self.train(was_training)
        embeddings = torch.cat(chunks) if chunks else torch.empty(0, self.embedding_dim)
        result = torch.empty_like(embeddings)
        result[torch.tensor(order, dtype=torch.long)] = embeddings
        return result

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a sentence-transformers folder (transformer, tokenizer, pooling, normalisation, prompts)."""
        if self.pooling == "pooler":
            raise ValueError(
                "pooling 'pooler' has no sentence-transformers equivalent; export this encoder as part of a "
                "transformers model instead (or train it with mean, cls or last pooling)"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": _ST_TRANSFORMER},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST_POOLING},
        ]
        if self.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": _ST_NORMALIZE})
            (directory / "2_Normalize").mkdir(exist_ok=True)
        (directory / "modules.json").write_text(json.dumps(modules, indent=2))
        (directory / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_length, "do_lower_case": False}, indent=2)
        )
        (directory / "1_Pooling").mkdir(exist_ok=True)
        pooling = {
            "word_embedding_dimension": self.embedding_dim,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_lasttoken": self.pooling == "last",
        }
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
        (directory / "config_sentence_transformers.json").write_text(
            json.dumps(
                {
                    "similarity_fn_name": "cosine",
                    "prompts": self.prompts,
                    "default_prompt_name": self.default_prompt_name,
                },
                indent=2,
            )
        )
        return directory
