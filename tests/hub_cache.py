"""Lays out local folders as Hugging Face Hub cache entries, so that loading by repo id works with HF_HUB_OFFLINE=1.

The layout is the one `huggingface_hub` (2.x) writes when it downloads a repository:

```
<cache>/models--<org>--<name>/
    blobs/<etag>                              file contents, named by git blob sha1 (sha256 for LFS files)
    refs/main                                 the commit hash `main` points to (no newline)
    snapshots/<commit hash>/<path in repo>    relative symlinks to ../../blobs/<etag> (copies where links fail)
```

Offline, `hf_hub_download` reads `refs/<revision>` to find the commit, then returns `snapshots/<commit>/<file>` if it
exists. A file absent from the snapshot raises `LocalEntryNotFoundError`, which Transformers treats as "optional file
not there". `.no_exist/<commit>/<file>` markers are written only by an online lookup that got a 404; they merely
short-cut that lookup, so an offline cache does not need them (`populate_hub_cache` can still write some).
"""

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

# Suffixes that the Hub stores through LFS (their blobs are named by sha256 rather than by git blob sha1).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")


def repo_folder_name(repo_id: str, repo_type: str = "model") -> str:
    """`org/name` -> `models--org--name`, as `huggingface_hub.file_download.repo_folder_name`."""
    return "--".join([f"{repo_type}s", *repo_id.split("/")])


def file_etag(path: Path) -> str:
    """The etag the Hub gives a file: sha256 for LFS files, the git blob sha1 for the others."""
    data = path.read_bytes()
    if path.name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def populate_hub_cache(
    cache_dir: str | os.PathLike,
    repo_id: str,
    folder: str | os.PathLike,
    revision: str = "main",
    missing_files: Iterable[str] = (),
) -> str:
    """Puts every file under `folder` into the Hub cache at `cache_dir` as repository `repo_id` at `revision`.

    The commit hash is derived from the files (same content, same hash), written to `refs/<revision>` and returned.
    `missing_files` are recorded under `.no_exist/<commit>/` as files known to be absent from the repository.
    """
    folder = Path(folder)
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    if not files:
        raise ValueError(f"{folder} holds no files to put in the cache.")
    etags = {path.relative_to(folder).as_posix(): file_etag(path) for path in files}
    tree = "".join(f"{name}\0{etag}\n" for name, etag in sorted(etags.items()))
    commit_hash = hashlib.sha1(f"{repo_id}\n{tree}".encode()).hexdigest()

    storage = Path(cache_dir) / repo_folder_name(repo_id)
    blobs, snapshot = storage / "blobs", storage / "snapshots" / commit_hash
    blobs.mkdir(parents=True, exist_ok=True)
    for path in files:
        name = path.relative_to(folder).as_posix()
        blob = blobs / etags[name]
        if not blob.exists():
            shutil.copyfile(path, blob)
        pointer = snapshot / name
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if pointer.exists() or pointer.is_symlink():
            pointer.unlink()
        try:
            pointer.symlink_to(os.path.relpath(blob, pointer.parent))
        except OSError:  # no symlinks (e.g. Windows without developer mode): huggingface_hub copies too
            shutil.copyfile(blob, pointer)
    for name in missing_files:
        marker = storage / ".no_exist" / commit_hash / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    ref = storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit_hash)
    return commit_hash
