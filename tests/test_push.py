"""Pushing to the Hub: huggingface_hub's real upload code (create_repo, create_branch, list_repo_files,
upload_folder, pull requests) against a small in-memory Hub served over HTTP on 127.0.0.1. Checks what arrives
(files, card metadata, the usage snippet naming the repo), that the token travels in the Authorization header only
and is never printed, logged or uploaded, the errors (no token, 401/403/500 answers, no server, a repo holding
another model, a folder that is not a model folder), that the local folder is never modified, the
`push_to_hub` recipe key pushing after a tiny Sentence-BERT training run, and pushed models loading back by their
repo id (`SentenceTransformer`, `ImageEncoder.from_pretrained`, open_clip's `hf-hub:`, the transformers pipeline)
through the same test Hub's download endpoints."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import huggingface_hub
import pytest
import torch
from conftest import pairs_training_args
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from mmcontrast.cli import main
from mmcontrast.hub.model_card import CardInfo, write_model_card
from mmcontrast.hub.push import PushError, hub_model_card, push_model
from mmcontrast.recipe import load_recipe
from mmcontrast.run_recipe import train_recipe

TOKEN = "hf_mmcontrastTestToken0123456789abcdef"


@dataclass
class Request:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeHub:
    """The Hub endpoints huggingface_hub's push calls, backed by dicts: repo id -> ref -> path -> bytes."""

    token: str
    repos: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    created: list[dict] = field(default_factory=list)
    commits: list[dict] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    fail_with: int | None = None
    endpoint: str = ""

    def answer(self, request: Request) -> tuple[int, dict[str, str], object]:
        self.requests.append(request)
        if self.fail_with is not None:
            return self.fail_with, {}, {"error": f"failing with {self.fail_with} as the test asked"}
        route = urlsplit(request.path).path
        if route == "/api/validate-yaml":
            return 200, {}, {"errors": [], "warnings": []}
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", route)
        download = info or re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", route)
        if download is not None and request.method in ("GET", "HEAD"):
            return self.download(request, download)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, {"error": "Invalid credentials in Authorization header"}
        if (request.method, route) == ("POST", "/api/repos/create"):
            return self.create_repo(json.loads(request.body))
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(tree|preupload|commit|branch|discussions)(?:/(.+))?", route)
        if match is None:
            self.unknown.append(f"{request.method} {request.path}")
            return 404, {}, {"error": "no such endpoint in the test Hub"}
        repo_id, action, ref = match.group(1), match.group(2), unquote(match.group(3) or "")
        if repo_id not in self.repos:
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
        return self.repo_action(request, repo_id, action, ref)

    def repo_action(self, request: Request, repo_id: str, action: str, ref: str) -> tuple[int, dict, object]:
        refs = self.repos[repo_id]
        if action == "branch":
            if ref in refs:
                return 409, {}, {"error": "Branch already exists"}
            refs[ref] = dict(refs[json.loads(request.body or b"{}").get("startingPoint", "main")])
            return 200, {}, {}
        if action == "discussions" and request.method == "POST":
            number = sum(name.startswith("refs/pr/") for name in refs) + 1
            refs[f"refs/pr/{number}"] = dict(refs["main"])
            return 200, {}, {"num": number}
        if action == "discussions":
            return 200, {}, self.pull_request(repo_id, int(ref))
        folder = ""
        if action == "tree" and ref not in refs:  # tree/{revision}/{folder}: revisions may hold slashes too
            ref, folder = next(((r, ref[len(r) + 1 :]) for r in refs if ref.startswith(f"{r}/")), (ref, ""))
        files = _revision(refs, ref)
        if files is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": f"Invalid rev id: {ref}"}
        if action == "tree" and request.method == "GET":
            inside = {p: c for p, c in files.items() if not folder or p.startswith(f"{folder}/")}
            if folder and not inside:
                return 404, {"X-Error-Code": "EntryNotFound"}, {"error": f"{folder} does not exist"}
            return 200, {}, [{"type": "file", "path": p, "size": len(c), "oid": _sha1(c)} for p, c in inside.items()]
        if action == "preupload" and request.method == "POST":
            wanted = json.loads(request.body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in wanted]
            return 200, {}, {"files": modes}
        if action == "commit" and request.method == "POST":
            return self.commit(repo_id, ref, files, request.body)
        self.unknown.append(f"{request.method} {request.path}")
        return 404, {}, {"error": "no such endpoint in the test Hub"}

    def download(self, request: Request, match: re.Match) -> tuple[int, dict[str, str], object]:
        """What ``snapshot_download`` / ``hf_hub_download`` read: repo info with its files, then each file."""
        repo_id, ref = match.group(1), unquote(match.group(2) or "main")
        files = _revision(self.repos.get(repo_id, {}), ref)
        if files is None:
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
        sha = _tree_sha(files)
        if match.re.pattern.startswith("/api/"):
            siblings = [{"rfilename": path} for path in sorted(files)]
            return 200, {}, {"id": repo_id, "sha": sha, "siblings": siblings, "private": False, "tags": []}
        path = unquote(match.group(3))
        if path not in files:
            return 404, {"X-Error-Code": "EntryNotFound"}, {"error": f"{path} does not exist"}
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_sha1(files[path])}"', "Content-Type": "application/octet-stream"}
        return 200, headers, files[path]

    def create_repo(self, payload: dict) -> tuple[int, dict[str, str], object]:
        repo_id = f"{payload['organization']}/{payload['name']}"
        self.created.append(payload)
        if repo_id in self.repos:
            return 409, {}, {"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"}
        self.repos[repo_id] = {"main": {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}}
        return 200, {}, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id}

    def commit(self, repo_id: str, ref: str, files: dict[str, bytes], body: bytes) -> tuple[int, dict, object]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"]
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                del files[value["path"]]
            else:
                return 400, {}, {"error": f"the test Hub takes inline files only, got {line['key']}"}
        oid = _sha1(body)
        self.commits.append({"repo": repo_id, "ref": ref, "summary": header["summary"], "oid": oid})
        return 200, {}, {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid}

    def pull_request(self, repo_id: str, number: int) -> dict:
        return {
            "num": number,
            "title": "upload",
            "status": "open",
            "isPullRequest": True,
            "createdAt": "2025-01-01T00:00:00.000Z",
            "repo": {"name": repo_id, "type": "model"},
            "author": {"name": "user"},
            "events": [],
            "changes": {"base": "refs/heads/main"},
            "filesWithConflicts": [],
        }


def _refs(paths: set[str]) -> set[str]:
    return {path.split("/resolve/")[1].split("/")[0] for path in paths}


def _revision(refs: dict[str, dict[str, bytes]], ref: str) -> dict[str, bytes] | None:
    """The files of a branch, or of the revision a commit sha names."""
    return refs.get(ref) or next((files for files in refs.values() if _tree_sha(files) == ref), None)


def _tree_sha(files: dict[str, bytes]) -> str:
    """The commit sha the test Hub shows for a revision: a hash of its files."""
    return _sha1(json.dumps(sorted((path, _sha1(content)) for path, content in files.items())).encode())


def _sha1(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


def _serve(hub: FakeHub) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, extra, payload = hub.answer(Request(self.command, self.path, headers, body))
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **extra}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _reply

        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return server


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """A running test Hub; this process's huggingface_hub points at it, online, with TOKEN in HF_TOKEN."""
    fake = FakeHub(TOKEN)
    server = _serve(fake)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.endpoint)
    template = fake.endpoint + "/{repo_id}/resolve/{revision}/{filename}"  # downloads (read at import time too)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield fake
    server.shutdown()
    server.server_close()


def _model_folder(directory: Path) -> Path:
    """A sentence-transformers-like model folder with a card, plus what a push must leave out."""
    directory.mkdir(parents=True)
    save_file({"weight": torch.arange(12.0).reshape(3, 4)}, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 4}))
    (directory / "modules.json").write_text("[]")
    (directory / "training_curve.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really an image")
    write_model_card(
        directory,
        CardInfo(
            title="tiny test model",
            description="A model for the push tests.",
            library_name="sentence-transformers",
            pipeline_tag="sentence-similarity",
            usage=f'from sentence_transformers import SentenceTransformer\nmodel = SentenceTransformer("{directory}")',
            recipe="method: sbert\n",
            results=[("retrieval", "pairs", "recall@1", 0.75)],
            image="training_curve.png",
        ),
    )
    (directory / "checkpoints" / "step-10").mkdir(parents=True)
    (directory / "checkpoints" / "step-10" / "optimizer.bin").write_bytes(b"optimizer state")
    (directory / ".env").write_text("SOME_SETTING=1\n")
    return directory


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha1(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_token_only_in_auth_headers(hub: FakeHub) -> None:
    assert hub.requests
    for request in hub.requests:
        assert TOKEN not in request.path and TOKEN.encode() not in request.body, request.path
        assert all(TOKEN not in value for key, value in request.headers.items() if key != "authorization")


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    return {**env, "HF_HUB_DISABLE_TELEMETRY": "1", **extra}


@pytest.mark.parametrize("disable_xet", ["0", "1"], ids=["xet-pipeline", "single-commit"])
def test_cli_push_in_a_subprocess_uploads_the_folder_and_card(tmp_path, disable_xet):
    """The installed `mmcontrast push` with HF_ENDPOINT and HF_TOKEN, huggingface_hub's debug log on; through
    huggingface_hub's streamed upload (hf_xet installed) and its single-commit one (without hf_xet)."""
    hub = FakeHub(TOKEN)
    server = _serve(hub)
    folder = _model_folder(tmp_path / "run" / "model")
    before = _hashes(folder)
    env = _subprocess_env(
        HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"), HF_DEBUG="1", HF_HUB_OFFLINE="0"
    )
    env["HF_HUB_DISABLE_XET"] = disable_xet

    command = [str(Path(sys.executable).parent / "mmcontrast"), "push", str(folder), "--repo-id", "alice/tiny"]
    command += ["--private", "--commit-message", "first model"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert "authorization: <TOKEN>" in done.stderr  # huggingface_hub's request log was on (and redacts)
    assert TOKEN not in done.stdout + done.stderr
    _assert_token_only_in_auth_headers(hub)
    assert not hub.unknown
    assert hub.created[0]["visibility"] == "private"
    assert [c["summary"] for c in hub.commits] == ["first model"]

    arrived = hub.repos["alice/tiny"]["main"]
    local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    expected = {name for name in local if not name.startswith("checkpoints/") and name != ".env"}
    assert set(arrived) == expected | {".gitattributes"}
    assert all(arrived[name] == local[name] for name in expected - {"README.md"})
    assert all(TOKEN.encode() not in content for content in arrived.values())
    card = ModelCard(arrived["README.md"].decode())
    assert card.data.pipeline_tag == "sentence-similarity" and card.data.library_name == "sentence-transformers"
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("recall@1", 0.75)]
    assert 'SentenceTransformer("alice/tiny")' in card.text and str(folder) not in card.text
    assert "![training curve](training_curve.png)" in card.text
    assert f"{hub.endpoint}/alice/tiny/commit/" in done.stdout
    assert _hashes(folder) == before


def test_push_to_a_branch_and_as_a_pull_request(hub, tmp_path, caplog):
    folder = _model_folder(tmp_path / "model")
    before = _hashes(folder)
    caplog.set_level("DEBUG")
    url = push_model(folder, "alice/tiny", revision="experiment", commit_message="on a branch")
    assert url.startswith(f"{hub.endpoint}/alice/tiny/commit/")
    refs = hub.repos["alice/tiny"]
    assert set(refs) == {"main", "experiment"} and set(refs["main"]) == {".gitattributes"}
    assert {"model.safetensors", "README.md", "config.json"} <= set(refs["experiment"])
    assert hub.commits[-1]["ref"] == "experiment"

    assert main(["push", str(folder), "--repo-id", "alice/tiny", "--revision", "experiment"]) == 0  # again: fine
    assert main(["push", str(folder), "--repo-id", "alice/tiny", "--create-pr"]) == 0
    assert hub.commits[-1]["ref"] == "refs/pr/1" and "README.md" in refs["refs/pr/1"]
    assert set(refs["main"]) == {".gitattributes"}  # a pull request leaves main alone
    assert not hub.unknown
    _assert_token_only_in_auth_headers(hub)
    assert all(TOKEN not in record.getMessage() for record in caplog.records)
    assert _hashes(folder) == before


def test_repo_holding_another_model_is_refused_unless_overwrite(hub, tmp_path, capsys):
    folder = _model_folder(tmp_path / "model")
    hub.repos["alice/other"] = {"main": {".gitattributes": b"", "pytorch_model.bin": b"pickle", "README.md": b"hi"}}
    assert main(["push", str(folder), "--repo-id", "alice/other"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mmcontrast push: error: alice/other (main) already holds files")
    assert "pytorch_model.bin" in error and "--overwrite" in error
    assert not hub.commits and hub.repos["alice/other"]["main"]["pytorch_model.bin"] == b"pickle"

    assert main(["push", str(folder), "--repo-id", "alice/other", "--overwrite"]) == 0
    assert "pytorch_model.bin" not in hub.repos["alice/other"]["main"]  # deleted in the same commit
    assert len(hub.commits) == 1 and "model.safetensors" in hub.repos["alice/other"]["main"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, "the Hub failed with 500 Internal Server Error"),
        (403, "(403 Forbidden): use a token with write access to 'alice'"),
        (401, "the Hub refused the token (401 Unauthorized)"),
        (404, "alice/tiny was not found (404 Not Found)"),
    ],
)
def test_hub_error_answers_give_clear_errors(hub, tmp_path, capsys, status, expected):
    folder = _model_folder(tmp_path / "model")
    before = _hashes(folder)
    hub.fail_with = status
    assert main(["push", str(folder), "--repo-id", "alice/tiny"]) == 2
    output = capsys.readouterr()
    assert output.err.startswith("mmcontrast push: error: ") and expected in output.err, output.err
    assert TOKEN not in output.out + output.err
    assert _hashes(folder) == before


def test_wrong_token_is_refused_and_not_shown(hub, tmp_path, monkeypatch):
    folder = _model_folder(tmp_path / "model")
    monkeypatch.setenv("HF_TOKEN", "hf_notTheRightToken0123456789")
    with pytest.raises(PushError, match=r"401 Unauthorized.*hf auth login") as error:
        push_model(folder, "alice/tiny")
    assert "hf_notTheRightToken" not in str(error.value)


def test_no_server_gives_a_clear_error(hub, tmp_path, monkeypatch, capsys):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", closed)
    folder = _model_folder(tmp_path / "model")
    before = _hashes(folder)
    assert main(["push", str(folder), "--repo-id", "alice/tiny"]) == 2
    error = capsys.readouterr().err
    assert f"cannot reach the Hub at {closed} (ConnectError" in error and "check the network connection" in error
    assert _hashes(folder) == before


def test_no_token_says_how_to_log_in(tmp_path):
    """No HF_TOKEN and an empty HF_HOME: the CLI stops before any request (there is no server at all)."""
    folder = _model_folder(tmp_path / "model")
    before = _hashes(folder)
    env = _subprocess_env(HF_HOME=str(tmp_path / "empty_hf_home"), HF_ENDPOINT="http://127.0.0.1:9")
    command = [str(Path(sys.executable).parent / "mmcontrast"), "push", str(folder), "--repo-id", "alice/tiny"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("mmcontrast push: error: no Hugging Face token found")
    assert "`hf auth login`" in done.stderr and "HF_TOKEN" in done.stderr
    assert _hashes(folder) == before


def test_offline_mode_is_named(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match="HF_HUB_OFFLINE is set"):
        push_model(_model_folder(tmp_path / "model"), "alice/tiny")


def test_refuses_what_is_not_a_model_folder_or_holds_the_token(hub, tmp_path):
    run = tmp_path / "run"
    folder = _model_folder(run / "model")
    for bad, message in [
        (tmp_path / "missing", "does not exist"),
        (run, "has no README.md model card"),
        (folder / "checkpoints", "has no README.md model card"),
    ]:
        with pytest.raises(PushError, match=message):
            push_model(bad, "alice/tiny")
    card = (folder / "README.md").read_text()
    (folder / "README.md").write_text("---\nlibrary_name: [unclosed\n---\n")
    with pytest.raises(PushError, match=r"metadata of .* does not parse"):
        push_model(folder, "alice/tiny")
    (folder / "README.md").write_text(card)
    (folder / "config.json").rename(folder / "settings.json")
    (folder / "modules.json").unlink()
    with pytest.raises(PushError, match=r"has no model config \(config.json"):
        push_model(folder, "alice/tiny")
    (folder / "settings.json").write_text(json.dumps({"token": TOKEN}))
    (folder / "config.json").write_text("{}")
    with pytest.raises(PushError, match=r"settings\.json' contains your Hugging Face token") as error:
        push_model(folder, "alice/tiny")
    assert TOKEN not in str(error.value)
    for repo_id, message in [("tiny", "must be USER/NAME"), ("alice/ti ny", "is not valid")]:
        with pytest.raises(PushError, match=message):
            push_model(folder, repo_id)
    with pytest.raises(PushError, match="pull request is always opened against 'main'"):
        push_model(folder, "alice/tiny", revision="dev", create_pr=True)
    assert not hub.requests  # all refused before any request


def test_card_usage_names_the_repo_instead_of_the_local_folder(tmp_path, monkeypatch):
    folder = tmp_path / "runs" / "clip" / "model"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    text = (
        'pipeline("zero-shot-image-classification", model="runs/clip/model")\n'
        'open_clip.create_model_and_transforms("local-dir:runs/clip/model")\n'
        f'SentenceTransformer("{folder}")\nlabels = ["model", "runs/clip", "a photo of a {{}}."]\n'
    )
    assert hub_model_card(text, folder, "alice/clip") == (
        'pipeline("zero-shot-image-classification", model="alice/clip")\n'
        'open_clip.create_model_and_transforms("hf-hub:alice/clip")\n'
        'SentenceTransformer("alice/clip")\nlabels = ["model", "runs/clip", "a photo of a {}."]\n'
    )


def test_push_to_hub_recipe_key_pushes_after_training(hub, tiny_bert_path, pairs_csv, tmp_path):
    run = tmp_path / "run"
    args = pairs_training_args(tiny_bert_path, pairs_csv, run)
    args = [a for a in args if not a.startswith("eval.retrieval=")]
    args += [f"eval.retrieval={pairs_csv}", "eval.retrieval_format=csv", "eval.retrieval_columns=[anchor, positive]"]
    args += ["eval.retrieval_min_score=null", "eval.limit=32", "train.max_steps=2", "train.batch_size=16"]
    args += ["train.logging_steps=1", "train.progress_bar=false"]
    args += ["push_to_hub.repo_id=alice/sbert", "push_to_hub.commit_message=trained"]
    assert main(args) == 0
    model_dir = run / "model"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pushed_to"].startswith(f"{hub.endpoint}/alice/sbert/commit/")
    arrived = hub.repos["alice/sbert"]["main"]
    local = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert set(arrived) == local | {".gitattributes"} and "training_curve.png" in local
    card = ModelCard(arrived["README.md"].decode())
    recall = {r.metric_type: r.metric_value for r in card.data.eval_results}["recall@1"]
    assert recall == pytest.approx(summary["metrics"]["retrieval/recall@1"])  # pushed after the final evaluation
    assert 'SentenceTransformer("alice/sbert")' in card.text and "push_to_hub" in card.text
    assert (model_dir / "README.md").read_text() != arrived["README.md"].decode()  # the local card is unchanged
    assert [c["summary"] for c in hub.commits] == ["trained"]
    _assert_token_only_in_auth_headers(hub)
    assert all(TOKEN not in p.read_text(errors="ignore") for p in run.rglob("*") if p.is_file())

    from sentence_transformers import SentenceTransformer  # the pushed repo loads back by its id

    pulled = SentenceTransformer("alice/sbert", cache_folder=str(tmp_path / "cache"), device="cpu")
    texts = ["a pushed model", "loads back from the Hub"]
    local = SentenceTransformer(str(model_dir), device="cpu")
    assert torch.equal(pulled.encode(texts, convert_to_tensor=True), local.encode(texts, convert_to_tensor=True))


def test_pushed_generic_encoder_loads_back_with_one_from_pretrained(hub, tmp_path, monkeypatch):
    from mmcontrast.modalities.image import ImageEncoder

    torch.manual_seed(0)
    folder = ImageEncoder.create("timm/test_vit", image_size=32).save_pretrained(tmp_path / "model")
    usage = 'encoder = ImageEncoder.from_pretrained("{folder}")'
    info = CardInfo("encoder", "A test encoder.", "mmcontrast", "image-feature-extraction", usage, "method: simclr")
    write_model_card(folder, info)
    push_model(folder, "alice/encoder")
    pulled = ImageEncoder.from_pretrained("alice/encoder")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(pulled(images), ImageEncoder.from_pretrained(folder)(images))
    downloads = {urlsplit(r.path).path for r in hub.requests if "/resolve/" in r.path}
    assert downloads == {
        f"/alice/encoder/resolve/{ref}/{name}"
        for ref in _refs(downloads)
        for name in ("config.json", "model.safetensors")
    }  # the card and the rest stay behind


def test_pushed_audio_encoder_loads_back_with_its_context_network(hub, tmp_path):
    from huggingface_hub import ModelCard

    from mmcontrast.modalities.audio import AudioEncoder

    torch.manual_seed(0)
    encoder = AudioEncoder("cpc", sample_rate=8000, context={"type": "gru", "dim": 16}, normalize=True, width=16)
    folder = encoder.save_pretrained(tmp_path / "model")
    usage = 'encoder = AudioEncoder.from_pretrained("{folder}")'
    write_model_card(folder, CardInfo("cpc", "A test CPC encoder.", "mmcontrast", "feature-extraction", usage, "cpc"))
    push_model(folder, "alice/cpc")
    pulled = AudioEncoder.from_pretrained("alice/cpc")
    waveforms = torch.randn(2, 1600)
    with torch.no_grad():
        assert torch.equal(pulled(waveforms), encoder.eval()(waveforms))
    assert pulled.normalize and pulled.context_net is not None
    card = ModelCard.load(huggingface_hub.hf_hub_download("alice/cpc", "README.md"))
    assert card.data.pipeline_tag == "feature-extraction"


def test_push_to_hub_without_a_token_stops_before_training(tiny_bert_path, pairs_csv, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    run = tmp_path / "run"
    _, recipe_file, *overrides = pairs_training_args(tiny_bert_path, pairs_csv, run)
    recipe = load_recipe(recipe_file, [*overrides, "push_to_hub.repo_id=alice/sbert"])
    with pytest.raises(PushError, match="hf auth login"):
        train_recipe(recipe)
    assert not run.exists()


def test_pushed_open_clip_folder_loads_back_in_open_clip_and_transformers(hub, tmp_path):
    import open_clip
    import yaml
    from transformers import pipeline

    from mmcontrast.data.images import digits
    from mmcontrast.hub.open_clip_folder import OpenClipDualEncoder, save_open_clip
    from mmcontrast.hub.open_clip_to_transformers import save_open_clip_as_transformers
    from mmcontrast.modalities.open_clip_towers import open_clip_towers

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "clip_open_clip_digits.yaml"
    model_cfg = yaml.safe_load(recipe.read_text())["model"]["open_clip"]["model_cfg"]
    towers = open_clip_towers(model_cfg=model_cfg)
    parts = (towers.image, towers.text, torch.tensor(2.0), model_cfg)
    folder = save_open_clip_as_transformers(*parts, save_open_clip(*parts, tmp_path / "model"))
    usage = 'open_clip.create_model_and_transforms("local-dir:{folder}")'
    info = CardInfo("clip", "A test CLIP.", "open_clip", "zero-shot-image-classification", usage, "method: clip")
    write_model_card(folder, info)
    push_model(folder, "alice/clip")

    model, _, preprocess = open_clip.create_model_and_transforms("hf-hub:alice/clip")
    tokenizer = open_clip.get_tokenizer("hf-hub:alice/clip")
    local = OpenClipDualEncoder(folder)
    digit = digits("test").rows[0]["image"]
    texts = ["a handwritten seven.", "the number two."]
    with torch.no_grad():
        pulled_image = model.eval().encode_image(preprocess(digit)[None])
        assert torch.equal(pulled_image, local.model.encode_image(local.preprocess(digit)[None]))
        assert torch.equal(model.encode_text(tokenizer(texts)), local.model.encode_text(local.tokenizer(texts)))
    scores = pipeline("zero-shot-image-classification", model="alice/clip")(digit, candidate_labels=["a", "b"])
    assert {s["label"] for s in scores} == {"a", "b"}
