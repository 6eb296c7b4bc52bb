"""Folders that `theworld` builds once and keeps: under `$THEWORLD_CACHE` (default `~/.cache/theworld`), each built
in a temporary folder beside its final place and renamed into it, so no reader ever sees a partial one."""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root(kind: str) -> Path:
    """`$THEWORLD_CACHE/<kind>` if that variable is set, else `~/.cache/theworld/<kind>`."""
    cache = os.environ.get("THEWORLD_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "theworld") / kind


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """`target`, built by `build(folder)` into a temporary folder and renamed into place unless it already exists.

    Concurrent builders never see or leave a partial entry; if another builder finishes first, its entry is kept.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(building)
        try:
            os.rename(building, target)
        except OSError:
            # Another builder renamed its entry into place first (renaming onto a non-empty folder fails).
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target
