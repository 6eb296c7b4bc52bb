"""In-process fake of the Hugging Face Hub HTTP API, for testing the real ``huggingface_hub`` client.

``FakeHub().start()`` serves on ``http://127.0.0.1:<free port>`` from a background thread
(stdlib ``ThreadingHTTPServer``) and keeps everything in memory: repos -> commits -> ``{path: bytes}``,
plus branches pointing at commits. Each commit gets a 40-hex sha and is based on its parent's
files; ``revision`` may be a branch name or a full commit sha. The store, ``FakeHub.repos`` (``Repo`` and
``Commit`` dataclasses), is open to inspection. Written against the requests ``huggingface_hub`` 2.4 sends.

Implemented (model repos only; ``{repo}`` is ``namespace/name``, ``{rev}`` a branch or commit sha):

- ``POST /api/repos/create``: 409 with the repo ``url`` if it exists (what ``exist_ok=True`` needs).
  A new repo has one "initial commit" on ``main`` holding a ``.gitattributes``, like the Hub.
- ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}``: ``model_info`` /
  ``repo_info`` / ``repo_exists``, with ``sha`` and ``siblings`` (``?blobs=true`` adds size and blob id).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``?recursive=true``): ``list_repo_tree``,
  ``list_repo_files`` and ``snapshot_download``; one page, no ``Link`` header; ``expand=true`` is a 501.
- ``GET /api/models/{repo}/refs``: ``list_repo_refs`` (branches only; no tags, converts or PRs).
- ``POST /api/models/{repo}/branch/{branch}``: ``create_branch`` (optional ``startingPoint``).
- ``POST /api/models/{repo}/preupload/{rev}``: answers ``uploadMode: "regular"`` for every file, with
  the git blob sha of the current remote file as ``oid`` (so the client skips unchanged files).
- ``POST /api/models/{repo}/commit/{branch}``: ndjson with ``header``, ``file`` (base64),
  ``deletedFile`` and ``deletedFolder`` lines; honours ``parentCommit`` (412 if not the head).
- ``GET /api/organizations/{org}/overview``: 404, the Hub's answer for an organisation it does not hold (the fake
  holds none). Kernel loaders ask it whether a publisher is trusted (``kernels`` for bitsandbytes' CPU kernel, on
  import where the CPU has AVX512-BF16) and fall back to their own code on the 404.
- ``POST /api/validate-yaml``: checks the YAML syntax of a README front matter (no metadata schema);
  the client calls it before committing any ``README.md`` (e.g. transformers' ``push_to_hub``).
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}``: ``hf_hub_download`` and ``file_exists``. Answers
  ``X-Repo-Commit``, ``ETag`` (git blob sha1, quoted) and ``Content-Length``; never any ``X-Xet-*``
  header or redirect, so the client downloads over plain HTTP. ``Range`` is ignored (full 200 answer,
  which the client accepts).

Errors carry the ``X-Error-Code`` header the client maps to exceptions: ``RepoNotFound`` ->
``RepositoryNotFoundError``, ``RevisionNotFound`` -> ``RevisionNotFoundError``, ``EntryNotFound`` ->
``RemoteEntryNotFoundError`` (an ``EntryNotFoundError``; the 404 also carries ``X-Repo-Commit`` so the
client caches the miss).

Not implemented: dataset/space/kernel repos, LFS and Xet transfers (never offered, so never needed;
an ``lfsFile`` commit line is refused), pull requests (``create_pr``), tags, ``whoami``, deleting repos
or branches, commit history, ``.gitignore`` rules (``shouldIgnore`` is always false), short shas,
``Range`` requests and pagination. Any other route answers **501** with a JSON ``error`` and an
``X-Error-Message`` header, so a test relying on it fails loudly; ``FakeHub.request_log`` lists every
request with its status. Unlike the Hub, regular files of any size are accepted inline (the client
base64-encodes them in memory: keep test files small).

Auth: any token, or none, is accepted. Private repos are recorded and reported (``private: true``)
but access to them is not enforced.

Pointing the client at the fake: ``huggingface_hub`` reads ``HF_ENDPOINT`` once, at import, into
``constants.ENDPOINT`` and derives ``HUGGINGFACE_CO_URL_TEMPLATE`` and the trusted hosts from it, so
patching ``constants.ENDPOINT`` afterwards is not enough (download URLs would still point at
huggingface.co). In-process, pass the endpoint explicitly: ``HfApi(endpoint=url, token=...)``,
``hf_hub_download(..., endpoint=url)``, ``snapshot_download(..., endpoint=url)``. For code that uses the
default endpoint (e.g. transformers' ``from_pretrained`` / ``push_to_hub``), run it in a subprocess
whose environment includes ``hub_env(url, cache_dir)``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# Content of the ``.gitattributes`` of a new repo's initial commit (the Hub's is longer, with the same purpose).
INITIAL_GITATTRIBUTES = b"".join(
    b"*.%s filter=lfs diff=lfs merge=lfs -text\n" % extension for extension in (b"bin", b"safetensors")
)
# First path segments that are not a model namespace on the Hub.
_RESERVED = {"api", "datasets", "spaces", "kernels", "buckets"}


def hub_env(endpoint: str, cache_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Environment variables for a subprocess whose ``huggingface_hub`` must talk to the fake hub.

    Merge them over ``os.environ``. They point the default endpoint at the fake (``HF_ENDPOINT`` is
    only read at import, hence a fresh process), give a dummy token, and put ``HF_HOME`` at
    ``cache_dir`` with the file cache in ``cache_dir/hub`` (``HF_HUB_CACHE``, set explicitly so an
    inherited value cannot win). ``HF_HUB_DISABLE_TELEMETRY`` also stops the client from fetching its
    agent-harness list from the endpoint; ``HF_HUB_DISABLE_XET`` makes ``upload_folder`` use the plain
    ``create_commit`` path instead of the hf_xet pipeline; ``HF_HUB_OFFLINE=0`` and
    ``HF_HUB_ENABLE_HF_TRANSFER=0`` (unused in 2.4, a true value only warns) override inherited values;
    progress bars are off. Set ``HF_HUB_OFFLINE=1`` on top to test cache-only resolution.
    """
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(cache_dir),
        "HF_HUB_CACHE": str(Path(cache_dir) / "hub"),
        "HF_TOKEN": "hf_fake_token",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_ENABLE_HF_TRANSFER": "0",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


def git_blob_sha(data: bytes) -> str:
    """Git object id of a blob: what the Hub uses as ETag and ``oid`` of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error answer: HTTP status, message and optional ``X-Error-Code`` / extra headers."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = {"X-Error-Message": message.encode("ascii", "backslashreplace").decode(), **(headers or {})}
        if code:
            self.headers["X-Error-Code"] = code


@dataclass
class Commit:
    """One commit: its full file tree, not a diff."""

    oid: str
    parent: str | None
    title: str
    files: dict[str, bytes]
    date: str


@dataclass
class Repo:
    """A model repo: its commits by sha and its branches (name -> commit sha)."""

    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


@dataclass
class Response:
    """What a route answers; ``body`` is sent on GET/POST, only its length on HEAD."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data).encode(), status)


class FakeHub:
    """In-memory Hub serving the routes listed in the module docstring."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.request_log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.endpoint = ""
        self._lock = threading.Lock()
        self._serial = itertools.count()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Serve on 127.0.0.1 on a free port in a background thread; return the endpoint URL."""
        self._server = _Server(self)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        """Stop serving; the in-memory content is kept (``start`` again serves it on a new port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- store ------------------------------------------------------------------------------------

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.repos[repo_id]

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        oid = repo.branches.get(revision, revision)
        if oid not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _commit(self, repo: Repo, branch: str, title: str, files: dict[str, bytes]) -> Commit:
        parent = repo.branches.get(branch)
        seed = json.dumps([next(self._serial), parent, title, sorted((p, git_blob_sha(d)) for p, d in files.items())])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, files, _now())
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    # -- routes -----------------------------------------------------------------------------------

    def handle(self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes) -> Response:
        """Dispatch one request (``parts``: URL-decoded path segments) under the store lock."""
        with self._lock:
            match method, parts:
                case "POST", ["api", "repos", "create"]:
                    return self._create_repo(json.loads(body))
                case "GET", ["api", "organizations", org, "overview"]:
                    raise HubError(404, f"Organization {org} not found")
                case "POST", ["api", "validate-yaml"]:
                    return _validate_yaml(json.loads(body)["content"])
                case "GET", ["api", "models", ns, name]:
                    return self._info(f"{ns}/{name}", "main", query)
                case "GET", ["api", "models", ns, name, "revision", rev]:
                    return self._info(f"{ns}/{name}", rev, query)
                case "GET", ["api", "models", ns, name, "tree", rev, *path]:
                    return self._tree(f"{ns}/{name}", rev, "/".join(path), query)
                case "GET", ["api", "models", ns, name, "refs"]:
                    return self._refs(f"{ns}/{name}")
                case "POST", ["api", "models", ns, name, "branch", branch]:
                    return self._create_branch(f"{ns}/{name}", branch, json.loads(body or b"{}"))
                case "POST", ["api", "models", ns, name, "preupload", rev] if not query:
                    return self._preupload(f"{ns}/{name}", rev, json.loads(body))
                case "POST", ["api", "models", ns, name, "commit", rev] if not query:  # no create_pr / hot_reload
                    return self._create_commit(f"{ns}/{name}", rev, body)
                case "HEAD" | "GET", [ns, name, "resolve", rev, *path] if ns not in _RESERVED and path:
                    return self._resolve_file(f"{ns}/{name}", rev, "/".join(path))
        raise HubError(501, f"FakeHub does not implement {method} /{'/'.join(parts)} with query {query}")

    def _create_repo(self, payload: dict[str, Any]) -> Response:
        if payload.get("type", "model") != "model":
            raise HubError(501, "FakeHub only implements model repos")
        if not payload.get("organization"):
            raise HubError(400, "FakeHub needs a 'namespace/name' repo id (it has no whoami)")
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self.repos:
            return _json({"error": "You already created this model repo", "url": url}, 409)
        repo = self.repos[repo_id] = Repo(repo_id, payload.get("visibility") == "private", _now())
        self._commit(repo, "main", "initial commit", {".gitattributes": INITIAL_GITATTRIBUTES})
        return _json({"url": url, "name": repo_id})

    def _info(self, repo_id: str, rev: str, query: dict[str, list[str]]) -> Response:
        if {"expand", "securityStatus"} & query.keys():
            raise HubError(501, "FakeHub does not implement 'expand' or 'securityStatus' for model info")
        repo = self._repo(repo_id)
        commit = self._resolve(repo, rev)
        with_blobs = query.get("blobs") == ["true"]
        siblings = [
            {"rfilename": p, **({"size": len(d), "blobId": git_blob_sha(d)} if with_blobs else {})}
            for p, d in sorted(commit.files.items())
        ]
        return _json(
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.oid,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "createdAt": repo.created_at,
                "lastModified": commit.date,
                "tags": [],
                "siblings": siblings,
            }
        )

    def _tree(self, repo_id: str, rev: str, path: str, query: dict[str, list[str]]) -> Response:
        commit = self._resolve(self._repo(repo_id), rev)
        if query.get("expand", ["false"]) != ["false"]:
            raise HubError(501, "FakeHub does not implement 'expand' for tree listings (no last commit/security info)")
        recursive = query.get("recursive", ["false"]) == ["true"]
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for file_path, data in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for i in range(1, len(parts)) if recursive else range(1, min(2, len(parts))):
                folder = prefix + "/".join(parts[:i])
                entries[folder] = {"type": "directory", "oid": _tree_sha(commit.files, folder), "path": folder}
            if recursive or len(parts) == 1:
                entries[file_path] = {"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": file_path}
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        return _json(list(entries.values()))

    def _refs(self, repo_id: str) -> Response:
        repo = self._repo(repo_id)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
            for name, oid in sorted(repo.branches.items(), key=lambda item: (item[0] != "main", item[0]))
        ]
        return _json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _create_branch(self, repo_id: str, branch: str, payload: dict[str, Any]) -> Response:
        repo = self._repo(repo_id)
        start = self._resolve(repo, payload.get("startingPoint") or "main")
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = start.oid
        return _json({})

    def _preupload(self, repo_id: str, rev: str, payload: dict[str, Any]) -> Response:
        files = self._resolve(self._repo(repo_id), rev).files
        answer = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None,
            }
            for f in payload["files"]
        ]
        return _json({"files": answer})

    def _create_commit(self, repo_id: str, branch: str, body: bytes) -> Response:
        repo = self._repo(repo_id)
        head = self._resolve(repo, branch)
        if branch not in repo.branches:
            raise HubError(400, f"FakeHub commits only to branches, not to {branch}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        has_header = bool(lines) and lines[0]["key"] == "header"
        header, operations = (lines[0]["value"], lines[1:]) if has_header else ({}, lines)
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, f"parentCommit {header['parentCommit']} is not the head of {branch} ({head.oid})")
        files = dict(head.files)
        for line in operations:
            key, value = line["key"], line["value"]
            path = value["path"]
            if key == "file" and value.get("encoding") == "base64":
                files[path] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = path.rstrip("/") + "/"
                if not any(p.startswith(folder) for p in files):
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                files = {p: d for p, d in files.items() if not p.startswith(folder)}
            else:
                raise HubError(501, f"FakeHub only implements base64 files and deletions in commits, not {key!r}")
        commit = self._commit(repo, branch, header.get("summary", ""), files)
        url = f"{self.endpoint}/{repo_id}/commit/{commit.oid}"
        return _json({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def _resolve_file(self, repo_id: str, rev: str, path: str) -> Response:
        commit = self._resolve(self._repo(repo_id), rev)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_sha(data)}"'}
        return Response(data, headers=headers, content_type="application/octet-stream")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _tree_sha(files: dict[str, bytes], folder: str) -> str:
    """A stable id for a folder's content (not git's tree hash, which the client never checks)."""
    listing = sorted((p, git_blob_sha(d)) for p, d in files.items() if p.startswith(folder + "/"))
    return hashlib.sha1(json.dumps(listing).encode()).hexdigest()


def _validate_yaml(content: str) -> Response:
    """Check the YAML syntax of a README front matter, as the client expects ``errors``/``warnings``."""
    errors = []
    if content.startswith("---"):
        front_matter = content[3:].split("\n---", 1)[0]
        try:
            if not isinstance(yaml.safe_load(front_matter) or {}, dict):
                errors.append({"message": "README metadata must be a YAML mapping"})
        except yaml.YAMLError as e:
            errors.append({"message": f"Invalid YAML in README metadata: {e}"})
    return _json({"errors": errors, "warnings": []}, 400 if errors else 200)


class _Server(ThreadingHTTPServer):
    """The HTTP server of one ``FakeHub`` (request threads are daemons)."""

    def __init__(self, hub: FakeHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into ``FakeHub.handle`` calls and its answers or errors into responses."""

    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.strip("/").split("/")]
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                raise HubError(501, "FakeHub needs a Content-Length (no chunked request bodies)")
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            response = hub.handle(self.command, parts, parse_qs(url.query), body)
        except HubError as e:
            response = Response(json.dumps({"error": e.message}).encode(), e.status, e.headers)
        except Exception as e:  # a bug in the fake: answer 500 and show the traceback
            traceback.print_exc()
            message = f"FakeHub crashed on {self.command} {self.path}: {e!r}"
            response = Response(json.dumps({"error": message}).encode(), 500, {"X-Error-Message": message})
        hub.request_log.append((self.command, self.path, response.status))
        self.send_response(response.status)
        for name, value in {"Content-Type": response.content_type, **response.headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log (see ``FakeHub.request_log``)."""
