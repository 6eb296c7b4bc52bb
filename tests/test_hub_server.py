"""Exercise ``tests/hub_server.py`` through the real ``huggingface_hub`` client, over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hub_server import INITIAL_GITATTRIBUTES, FakeHub, hub_env
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

pytestmark = pytest.mark.usefixtures("online_hub_client")

REPO_ID = "tester/tiny-model"


@dataclass
class Published:
    """A repo on a running fake hub, with the expected file tree of each revision."""

    hub: FakeHub
    api: HfApi
    main_sha: str
    trees: dict[str, dict[str, bytes]]  # revision (branch name or commit sha) -> {path: content}


def _write_tree(folder: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def _read_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    """Main gets a folder upload; branch ``v2`` then gets a different version (adds, deletes, one file)."""
    v1 = {
        "notes.txt": b"version one\n",
        "config.json": json.dumps({"model_type": "tiny", "width": 8}).encode(),
        "model.safetensors": os.urandom(1 << 20),
    }
    v2 = {"notes.txt": b"version two\n", "model.safetensors": os.urandom(1 << 20)}
    with FakeHub() as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_fake_token")
        api.create_repo(REPO_ID, private=True, exist_ok=True)
        main_commit = api.upload_folder(
            repo_id=REPO_ID, folder_path=_write_tree(tmp_path_factory.mktemp("v1"), v1), commit_message="v1"
        )
        api.create_branch(REPO_ID, branch="v2")
        api.upload_folder(
            repo_id=REPO_ID,
            folder_path=_write_tree(tmp_path_factory.mktemp("v2"), v2),
            revision="v2",
            delete_patterns="*.json",
        )
        api.upload_file(path_or_fileobj=b"nested\n", path_in_repo="docs/nested.txt", repo_id=REPO_ID, revision="v2")
        main_tree = {".gitattributes": INITIAL_GITATTRIBUTES, **v1}
        v2_tree = {".gitattributes": INITIAL_GITATTRIBUTES, **v2, "docs/nested.txt": b"nested\n"}
        trees = {"main": main_tree, main_commit.oid: main_tree, "v2": v2_tree}
        yield Published(hub, api, main_commit.oid, trees)
        assert not [entry for entry in hub.request_log if entry[2] >= 500], hub.request_log


def test_repo_metadata(published: Published) -> None:
    api, trees = published.api, published.trees
    assert api.create_repo(REPO_ID, exist_ok=True).repo_id == REPO_ID
    assert api.repo_exists(REPO_ID) and not api.repo_exists("tester/nope")
    assert api.file_exists(REPO_ID, "config.json") and not api.file_exists(REPO_ID, "config.json", revision="v2")

    refs = {ref.name: ref.target_commit for ref in api.list_repo_refs(REPO_ID).branches}
    assert refs.keys() == {"main", "v2"} and refs["main"] == published.main_sha
    info = api.model_info(REPO_ID, revision="v2")
    assert info.sha == refs["v2"] and info.private
    assert {s.rfilename for s in info.siblings or []} == trees["v2"].keys()

    for revision, tree in trees.items():
        assert sorted(api.list_repo_files(REPO_ID, revision=revision)) == sorted(tree)
    top_level = {entry.path for entry in api.list_repo_tree(REPO_ID, revision="v2")}
    assert top_level == {".gitattributes", "notes.txt", "model.safetensors", "docs"}


def test_unchanged_upload_makes_no_commit(published: Published) -> None:
    api = published.api
    head = api.model_info(REPO_ID).sha
    unchanged = published.trees["main"]["notes.txt"]
    commit = api.upload_file(path_or_fileobj=unchanged, path_in_repo="notes.txt", repo_id=REPO_ID)
    assert commit.oid == head == api.model_info(REPO_ID).sha


def test_hf_hub_download_per_revision(published: Published, tmp_path: Path) -> None:
    for revision, tree in published.trees.items():
        for filename in ("notes.txt", "model.safetensors"):
            path = hf_hub_download(
                REPO_ID, filename, revision=revision, endpoint=published.hub.endpoint, cache_dir=tmp_path
            )
            assert Path(path).read_bytes() == tree[filename], (revision, filename)


def test_snapshot_download_per_revision(published: Published, tmp_path: Path) -> None:
    for i, (revision, tree) in enumerate(published.trees.items()):
        folder = snapshot_download(
            REPO_ID, revision=revision, endpoint=published.hub.endpoint, cache_dir=tmp_path / str(i)
        )
        assert _read_tree(Path(folder)) == tree, revision


def test_errors_map_to_client_exceptions(published: Published, tmp_path: Path) -> None:
    endpoint = published.hub.endpoint
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO_ID, "missing.txt", endpoint=endpoint, cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tester/missing-repo", "config.json", endpoint=endpoint, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO_ID, "notes.txt", revision="no-such-branch", endpoint=endpoint, cache_dir=tmp_path)


def test_unimplemented_route_fails_loudly() -> None:
    with FakeHub() as hub:
        api = HfApi(endpoint=hub.endpoint)
        with pytest.raises(HfHubHTTPError, match="FakeHub does not implement POST /api/models/a/b/preupload") as e:
            api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="a/b", create_pr=True)
        assert e.value.response.status_code == 501
        assert hub.request_log == [("POST", "/api/models/a/b/preupload/main?create_pr=1", 501)]


# Pushes (transformers' push_to_hub: create_repo, README check, commit) only when asked, then loads.
LOAD_CONFIG = """
import json, sys
from transformers import AutoConfig, BertConfig
if sys.argv[2] == "push":
    BertConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2).push_to_hub(sys.argv[1])
config = AutoConfig.from_pretrained(sys.argv[1])
print(json.dumps({"model_type": config.model_type, "hidden_size": config.hidden_size}))
"""


def _load_config(env: dict[str, str], action: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_CONFIG, "tester/tiny-bert", action],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_transformers_subprocess_online_then_offline(tmp_path: Path) -> None:
    with FakeHub() as hub:
        env = hub_env(hub.endpoint, tmp_path / "hf")
        online = _load_config(env, "push")
        api = HfApi(endpoint=hub.endpoint)
        assert sorted(api.list_repo_files("tester/tiny-bert")) == [".gitattributes", "README.md", "config.json"]
        # transformers resolves main to a commit sha (model_info), then downloads at that sha.
        sha = api.model_info("tester/tiny-bert").sha
        assert ("GET", f"/tester/tiny-bert/resolve/{sha}/config.json", 200) in hub.request_log
        assert not [entry for entry in hub.request_log if entry[2] >= 500], hub.request_log
    assert online == {"model_type": "bert", "hidden_size": 48}
    assert _load_config({**env, "HF_HUB_OFFLINE": "1"}, "load") == online
