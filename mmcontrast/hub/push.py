"""Push an exported model folder to the Hugging Face Hub with huggingface_hub (``create_repo``, ``upload_folder``).

The token comes from huggingface_hub's usual sources (``HF_TOKEN``, the ``hf auth login`` cache); it is sent in
the Authorization header only, and never printed, logged or written anywhere. The local folder is never
modified: the files are staged (as links) in a temporary folder, where the model card's usage snippet names the
Hub repo instead of the local path. Every failure raises :class:`PushError` with what is wrong and what to do.
"""

from __future__ import annotations

import glob
import mmap
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id
from yaml import YAMLError

from mmcontrast import __version__

try:  # the HTTP client of huggingface_hub >= 2
    from httpx2 import TransportError
except ImportError:  # huggingface_hub 1.x
    from httpx import TransportError

CONFIG_FILES = ("config.json", "config_sentence_transformers.json", "open_clip_config.json")
"""A model folder has at least one of these next to its README.md model card."""

SKIPPED_FOLDERS = ("checkpoints", "checkpoint-*", ".git", ".cache", ".huggingface", "__pycache__")
"""Folders never uploaded: training checkpoints (optimizer state, pickled RNG states) and caches."""

SKIPPED_FILES = ("token", "stored_tokens", "*.token", ".env", ".netrc", ".DS_Store")
"""Files never uploaded: credential files and their usual names."""

DEFAULT_COMMIT_MESSAGE = "Upload model trained with mmcontrast"

_QUOTED = re.compile(r'"(local-dir:)?([^"\n]+)"')


class PushError(RuntimeError):
    """A push could not be done; the message says what is wrong and what to do (and never holds the token)."""


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    overwrite: bool = False,
) -> str:
    """Upload a model folder to the Hub model repo ``repo_id`` and return the URL of the commit (or pull request).

    The repo is created when missing (``private`` applies to a new repo only); ``revision`` names a branch,
    created from ``main`` when missing; ``create_pr`` opens a pull request against ``main`` instead. A repo whose
    revision holds files the folder does not have (other than ``.gitattributes``) is refused unless
    ``overwrite``, which deletes those files in the same commit.
    """
    folder = check_model_folder(model_dir)
    token = check_push_settings(repo_id, revision, create_pr)
    files, skipped = upload_files(folder)
    readme = hub_model_card((folder / "README.md").read_text(encoding="utf-8"), folder, repo_id)
    _refuse_token_in_files(files, readme, token)
    if skipped:
        print(f"not uploaded (checkpoints, caches, credential files): {', '.join(skipped)}")
    api = HfApi(token=token, library_name="mmcontrast", library_version=__version__)
    branch = None if create_pr else revision
    with _hub_errors(repo_id, api.endpoint, token):
        api.create_repo(repo_id, private=private or None, exist_ok=True)
        if branch not in (None, "main"):
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        extra = sorted(set(api.list_repo_files(repo_id, revision=branch)) - set(files) - {".gitattributes"})
        if extra and not overwrite:
            raise PushError(
                f"{repo_id} ({branch or 'main'}) already holds files that {folder} does not have: "
                f"{', '.join(extra[:10])}{' ...' if len(extra) > 10 else ''}. It may hold another model: push to a new "
                "repo id, or give --overwrite (push_to_hub.overwrite: true) to replace its content"
            )
        target = "a pull request" if create_pr else f"{branch or 'main'}"
        print(f"pushing {len(files)} files from {folder} to {api.endpoint}/{repo_id} ({target})")
        with _staged(files, readme) as stage:
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=stage,
                commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
                revision=branch,
                create_pr=create_pr,
                delete_patterns=[glob.escape(path) for path in extra] or None,
            )
    return info.pr_url or info.commit_url


def check_push_settings(repo_id: str, revision: str | None = None, create_pr: bool = False) -> str:
    """Check what a push needs before any upload (or any training): a valid repo id and a token; returns the token."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PushError(f"repo id '{repo_id}' is not valid: {error}") from None
    if repo_id.count("/") != 1:
        raise PushError(f"repo id '{repo_id}' must be USER/NAME or ORG/NAME")
    if create_pr and revision not in (None, "main"):
        raise PushError("a pull request is always opened against 'main': leave out the revision or create_pr")
    token = get_token()
    if not token:
        raise PushError(
            "no Hugging Face token found: run `hf auth login` (with a token that has write access) or set HF_TOKEN"
        )
    return token


def check_model_folder(model_dir: str | Path) -> Path:
    """The folder, if it is an exported model folder: a README.md model card with metadata and a config file."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise PushError(f"model folder '{folder}' does not exist (give OUTPUT_DIR/model of a training run)")
    hint = "push the model folder a training run exported (OUTPUT_DIR/model), not a run or checkpoint folder"
    readme = folder / "README.md"
    if not readme.is_file():
        raise PushError(f"'{folder}' has no README.md model card: {hint}")
    try:
        metadata = ModelCard.load(readme).data.to_dict()
    except (ValueError, YAMLError) as error:
        raise PushError(f"the YAML metadata of '{readme}' does not parse: fix or re-export the card\n{error}") from None
    if not metadata:
        raise PushError(f"'{readme}' has no YAML metadata (library_name, pipeline_tag...): {hint}")
    if not any((folder / name).is_file() for name in CONFIG_FILES):
        raise PushError(f"'{folder}' has no model config ({', '.join(CONFIG_FILES)}): {hint}")
    return folder


def upload_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The files to upload (path in the repo -> local file) and the skipped paths (checkpoints, credentials)."""
    files, skipped = {}, []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        folders, name = relative.parts[:-1], relative.name
        if any(fnmatch(part, pattern) for part in folders for pattern in SKIPPED_FOLDERS):
            continue  # reported once, as its folder
        if path.is_dir() and any(fnmatch(name, pattern) for pattern in SKIPPED_FOLDERS):
            skipped.append(f"{relative.as_posix()}/")
        elif path.is_file() and any(fnmatch(name, pattern) for pattern in SKIPPED_FILES):
            skipped.append(relative.as_posix())
        elif path.is_file():
            files[relative.as_posix()] = path
    return files, skipped


def hub_model_card(text: str, folder: Path, repo_id: str) -> str:
    """The model card with the usage snippet loading ``repo_id`` instead of the local folder.

    A quoted string that names the folder (absolute, or relative with at least two parts, as the export wrote
    it) becomes ``"repo_id"``; an open_clip ``"local-dir:folder"`` becomes ``"hf-hub:repo_id"``.
    """
    resolved = folder.resolve()

    def names_folder(value: str) -> bool:
        path = Path(value)
        if path.is_absolute() or (Path.cwd() / path).exists():
            return path.resolve() == resolved
        return len(path.parts) >= 2 and resolved.parts[-len(path.parts) :] == path.parts

    def swap(match: re.Match) -> str:
        if not names_folder(match.group(2)):
            return match.group(0)
        return f'"hf-hub:{repo_id}"' if match.group(1) else f'"{repo_id}"'

    return _QUOTED.sub(swap, text)


def _refuse_token_in_files(files: dict[str, Path], readme: str, token: str) -> None:
    """Stop before uploading a file that holds the token (a pasted token in a config, a saved credential)."""
    for name, path in files.items():
        if token in readme if name == "README.md" else _holds(path, token.encode()):
            raise PushError(
                f"'{path}' contains your Hugging Face token: remove it from the file (and revoke the token if the "
                "file was shared), then push again"
            )


def _holds(path: Path, needle: bytes) -> bool:
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return False
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as content:
            return content.find(needle) >= 0


@contextmanager
def _staged(files: dict[str, Path], readme: str) -> Iterator[Path]:
    """A temporary folder of links to ``files``, with the Hub form of the model card as README.md."""
    with tempfile.TemporaryDirectory(prefix="mmcontrast-push-") as directory:
        stage = Path(directory)
        for name, path in files.items():
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name == "README.md":
                target.write_text(readme, encoding="utf-8")
            else:
                target.symlink_to(path.resolve())
        yield stage


@contextmanager
def _hub_errors(repo_id: str, endpoint: str, token: str) -> Iterator[None]:
    """Turn huggingface_hub and network errors into a :class:`PushError` (with the token scrubbed)."""
    try:
        yield
    except PushError:
        raise
    except OfflineModeIsEnabled:
        raise PushError("HF_HUB_OFFLINE is set: unset it (or set HF_HUB_OFFLINE=0) to push to the Hub") from None
    except HfHubHTTPError as error:
        raise PushError(_http_message(error, repo_id).replace(token, "***")) from error
    except TransportError as error:
        raise PushError(
            f"cannot reach the Hub at {endpoint} ({type(error).__name__}: {error}): check the network connection, "
            "proxy settings and HF_ENDPOINT, then push again".replace(token, "***")
        ) from error
    except ValueError as error:  # huggingface_hub's checks, e.g. the Hub refusing the card's metadata
        raise PushError(f"the push to {repo_id} was refused: {error}".replace(token, "***")) from error


def _http_message(error: HfHubHTTPError, repo_id: str) -> str:
    status = error.response.status_code
    namespace = repo_id.split("/")[0]
    if status == 401:
        return (
            f"the Hub refused the token (401 Unauthorized) for {repo_id}: it is invalid, expired or revoked; run "
            "`hf auth login` again or set HF_TOKEN to a valid token"
        )
    if status == 403:
        return (
            f"the token may not write to {repo_id} (403 Forbidden): use a token with write access to '{namespace}' "
            "(`hf auth login` with a write token), or push to a namespace you own"
        )
    if status == 404:
        return (
            f"{repo_id} was not found (404 Not Found): check the repo id and revision, and that the token can see "
            "the repo"
        )
    if status >= 500:
        return (
            f"the Hub failed with {status} {error.response.reason_phrase} while pushing to {repo_id}: a problem on "
            "the Hub's side; try again later"
        )
    detail = error.server_message or error.response.reason_phrase
    return f"the Hub answered {status} while pushing to {repo_id}: {detail}"
