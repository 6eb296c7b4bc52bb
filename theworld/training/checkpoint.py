"""Atomic checkpoint writes and the training state needed to resume, all in safetensors and JSON."""

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..hub.files import TRAINING_STATE_DIR
from ..modeling_theworld import TheWorld
from ..processing_theworld import TheWorldProcessor

STEP_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")  # as transformers' get_last_checkpoint reads them


def save_checkpoint(
    model: TheWorld,
    processor: TheWorldProcessor,
    directory: str | os.PathLike,
    training_state: dict[str, Any] | None = None,
    run_files: dict[str, str] | None = None,
) -> Path:
    """Writes model, processor (training state, and `run_files` {file name: its text}) to a temporary sibling, then
    renames it into place.

    A run killed while saving leaves the previous checkpoint intact: the final name only ever points at a complete
    folder. An existing checkpoint of the same name is replaced only after the new one is complete.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    processor.save_pretrained(temporary)
    if training_state is not None:
        write_training_state(temporary / TRAINING_STATE_DIR, **training_state)
    for name, text in (run_files or {}).items():
        (temporary / name).write_text(text)
    if directory.exists():
        previous = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, previous)
        os.replace(temporary, directory)
        shutil.rmtree(previous)
    else:
        os.replace(temporary, directory)
    return directory


def write_training_state(
    directory: Path,
    step: int,
    history: dict[str, list],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> None:
    """The step, the metric history, the random states (and optimizer moments as safetensors, the scheduler); nothing
    pickled."""
    directory.mkdir(parents=True)
    state: dict[str, Any] = {"step": step, "history": history}
    if optimizer is not None:
        optimizer_state = optimizer.state_dict()
        tensors = {
            f"{index}.{name}": value.detach().cpu().contiguous()
            for index, moments in optimizer_state["state"].items()
            for name, value in moments.items()
            if torch.is_tensor(value)
        }
        save_file(tensors, directory / "optimizer.safetensors")
        state["param_groups"] = optimizer_state["param_groups"]
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    save_file({"torch": torch.get_rng_state()}, directory / "rng.safetensors")
    numpy_rng = np.random.get_state()
    state["python_rng"] = _jsonable(random.getstate())
    state["numpy_rng"] = [numpy_rng[0], numpy_rng[1].tolist(), *numpy_rng[2:]]
    (directory / "state.json").write_text(json.dumps(state))


def read_training_state(
    directory: Path, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None
) -> tuple[int, dict[str, list]]:
    """Restores the random states (and optimizer, scheduler); returns the step reached and the metric history."""
    state = json.loads((directory / "state.json").read_text())
    if optimizer is not None:
        tensors = load_file(directory / "optimizer.safetensors")
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            moments.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": moments, "param_groups": state["param_groups"]})
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    random.setstate(_tuples(state["python_rng"]))
    numpy_state = state["numpy_rng"]
    np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
    torch.set_rng_state(load_file(directory / "rng.safetensors")["torch"])
    return state["step"], state["history"]


def prune_step_checkpoints(directory: Path, keep: int) -> None:
    """Removes all but the `keep` most recent `checkpoint-N` folders."""
    steps = sorted(
        (int(match.group(1)), path)
        for path in directory.glob("checkpoint-*")
        if (match := STEP_CHECKPOINT.match(path.name))
    )
    for _, path in steps[:-keep]:
        shutil.rmtree(path)


def _jsonable(value: Any) -> Any:
    return [_jsonable(item) for item in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value
