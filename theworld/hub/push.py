"""`theworld push`: a checkpoint folder, its evaluation and a generated model card to the Hub, in one commit."""

import json
import os
import re
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

from ..loading_theworld import README_NAME
from .card import build_model_card
from .files import EVAL_NAME, TRAINING_STATE_DIR, LocalCheckpoint
from .info import CheckpointInfo, read_info

COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


def check_shareable(info: CheckpointInfo) -> None:
    """Refuses a checkpoint that only its author could load: a base not pinned to a Hub commit, or code missing."""
    for role, (name, commit) in info.bases().items():
        if commit is None or not COMMIT_HASH.fullmatch(commit) or os.path.isdir(name):
            raise ValueError(
                f"{info.location} names its {role} base as {name!r} at revision {commit!r}, which nobody else can "
                "load. Build the model on Hub bases (`TheWorld.from_bases` with Hub ids, online or from the Hub "
                "cache), so that config.json pins each base to a commit; then train and push again."
            )
    if info.code_hash is None:
        raise ValueError(
            f"{info.location} lacks remote code files (it has {sorted(info.code_digests)}); save it with "
            "model.save_pretrained(...) and processor.save_pretrained(...)."
        )


def checkpoint_files(folder: Path) -> dict[str, Path]:
    """Path in the repository -> local file, for the folder's files but training state, hidden files and README."""
    files = {}
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and parts[0] != TRAINING_STATE_DIR and not any(part.startswith(".") for part in parts):
            files["/".join(parts)] = path
    files.pop(README_NAME, None)
    return files


def push_checkpoint(
    checkpoint: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    evaluation_file: str | os.PathLike | None = None,
    dataset: str | None = None,
    token: str | None = None,
) -> CommitInfo:
    """Uploads a checkpoint folder with its model card as one commit to `repo_id` (created if needed) on branch
    `revision` (created from main if needed; default main).

    The evaluation (`evaluation_file`, else the `eval.json` in or beside the folder) goes into the card and, as
    `eval.json`, into the repository. `private` applies to a new repository only.
    """
    folder = Path(checkpoint)
    files = LocalCheckpoint(folder)
    check_shareable(read_info(files))
    uploads = checkpoint_files(folder)
    evaluation_path = Path(evaluation_file) if evaluation_file is not None else files.path(EVAL_NAME)
    evaluation = None
    if evaluation_path is not None:
        evaluation = json.loads(evaluation_path.read_text(encoding="utf-8"))
        uploads[EVAL_NAME] = evaluation_path
    card = build_model_card(folder, repo_id, evaluation=evaluation, dataset=dataset)

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=path) for name, path in uploads.items()]
    operations.append(CommitOperationAdd(path_in_repo=README_NAME, path_or_fileobj=str(card).encode()))
    return api.create_commit(repo_id, operations, commit_message="Upload TheWorld checkpoint", revision=revision)
