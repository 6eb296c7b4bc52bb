"""A checkpoint's files, read one at a time from a local folder or a Hub repository, without loading any weights."""

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from safetensors import safe_open
from transformers.utils import CONFIG_NAME

from ..configuration_theworld import TheWorldConfig
from ..loading_theworld import WEIGHTS_NAME

# The remote code, in the order `sha256sum` lists the files (sorted by name).
REMOTE_CODE_FILES = (
    "configuration_theworld.py",
    "encoders_theworld.py",
    "loading_theworld.py",
    "modeling_theworld.py",
    "processing_theworld.py",
)
# What `theworld train` and `theworld eval` write beside a checkpoint (in the run folder, its parent).
EVAL_NAME = "eval.json"
TRAINING_CONFIG_NAME = "training_config.json"
HISTORY_NAME = "history.json"
RUN_FILES = (EVAL_NAME, TRAINING_CONFIG_NAME, HISTORY_NAME)
# Inside a step checkpoint: the state for resuming training (optimizer moments, random states); never uploaded.
TRAINING_STATE_DIR = "training_state"


def remote_code_hash(digests: Mapping[str, str]) -> str:
    """The one hash of the remote code, from the sha256 of each file (`remote_code_digests`).

    It is the sha256 of what `sha256sum` prints for the files of `REMOTE_CODE_FILES` in that order,
    so anyone can check it with `sha256sum *_theworld.py | sha256sum` in a clone of the repository.
    """
    listing = "".join(f"{digests[name]}  {name}\n" for name in REMOTE_CODE_FILES)
    return hashlib.sha256(listing.encode()).hexdigest()


class LocalCheckpoint:
    """A checkpoint folder. With `run_files_beside`, the run files (`RUN_FILES`) missing from it are looked for in
    its parent folder, where `theworld train` writes them."""

    def __init__(self, folder: str | os.PathLike, run_files_beside: bool = True):
        self.folder = Path(folder)
        self.location = str(folder)
        self.commit: str | None = None
        self.run_files_beside = run_files_beside
        if not (self.folder / CONFIG_NAME).is_file():
            raise OSError(f"{self.folder} holds no {CONFIG_NAME}: it is not a saved TheWorld checkpoint.")

    def path(self, name: str) -> Path | None:
        """Where file `name` of the checkpoint is, or None."""
        candidates = [self.folder / name]
        if self.run_files_beside and name in RUN_FILES:
            candidates.append(self.folder.parent / name)
        return next((path for path in candidates if path.is_file()), None)

    def read(self, name: str) -> bytes | None:
        path = self.path(name)
        return path.read_bytes() if path is not None else None

    def tensor_shapes(self) -> dict[str, list[int]]:
        """Name -> shape of every tensor in the weights, from the safetensors header alone."""
        with safe_open(self._weights(), framework="pt") as weights:
            return {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}

    def weights_bytes(self) -> int:
        return self._weights().stat().st_size

    def _weights(self) -> Path:
        if self.path(WEIGHTS_NAME) is None:
            raise OSError(f"{self.folder} has no {WEIGHTS_NAME}.")
        return self.folder / WEIGHTS_NAME


class HubCheckpoint:
    """A checkpoint repository on the Hub at one revision, resolved once to its commit; files download on demand."""

    def __init__(self, repo_id: str, revision: str | None = None):
        self.api = HfApi()
        self.repo_id = repo_id
        info = self.api.model_info(repo_id, revision=revision, files_metadata=True)
        self.commit: str | None = info.sha
        self.location = f"{repo_id} @ {revision or 'main'}"
        self.sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or []}

    def read(self, name: str) -> bytes | None:
        if name not in self.sizes:
            return None
        return Path(self.api.hf_hub_download(self.repo_id, name, revision=self.commit)).read_bytes()

    def tensor_shapes(self) -> dict[str, list[int]]:
        """Name -> shape of every tensor in the weights, from the safetensors header alone (a ranged download)."""
        self._require_weights()
        metadata = self.api.parse_safetensors_file_metadata(self.repo_id, WEIGHTS_NAME, revision=self.commit)
        return {name: list(tensor.shape) for name, tensor in metadata.tensors.items()}

    def weights_bytes(self) -> int:
        self._require_weights()
        return self.sizes[WEIGHTS_NAME]

    def _require_weights(self) -> None:
        if WEIGHTS_NAME not in self.sizes:
            raise OSError(f"{self.location} has no {WEIGHTS_NAME}.")


Checkpoint = LocalCheckpoint | HubCheckpoint


def open_checkpoint(repo_or_dir: str | os.PathLike, revision: str | None = None) -> Checkpoint:
    """A local folder if `repo_or_dir` is one, else a Hub repository at `revision`."""
    if os.path.isdir(repo_or_dir):
        if revision is not None:
            raise ValueError(f"{repo_or_dir} is a local folder; a revision applies to Hub repositories only.")
        return LocalCheckpoint(repo_or_dir)
    return HubCheckpoint(str(repo_or_dir), revision=revision)


def read_json(checkpoint: Checkpoint, name: str) -> Any:
    """The parsed JSON file `name` of the checkpoint, or None if it has none."""
    content = checkpoint.read(name)
    return json.loads(content) if content is not None else None


def load_config(checkpoint: Checkpoint) -> TheWorldConfig:
    """The checkpoint's `TheWorldConfig`, refusing what is not a TheWorld checkpoint."""
    config = read_json(checkpoint, CONFIG_NAME)
    if config is None or config.get("model_type") != TheWorldConfig.model_type:
        raise ValueError(f"{checkpoint.location} is not a TheWorld checkpoint (its {CONFIG_NAME} is not TheWorld's).")
    return TheWorldConfig.from_dict(config)


def remote_code_digests(read: Callable[[str], bytes | None]) -> dict[str, str]:
    """sha256 of each remote-code file that `read` (a checkpoint's `read`) finds."""
    digests = {}
    for name in REMOTE_CODE_FILES:
        content = read(name)
        if content is not None:
            digests[name] = hashlib.sha256(content).hexdigest()
    return digests
