"""Runs a script in a fresh interpreter that works offline, as a user without `theworld` installed would."""

import os
import subprocess
import sys
from pathlib import Path


def run_fresh(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Runs `script` with HF_HUB_OFFLINE=1, its own remote-code module cache under `cwd` and nothing of the tests on
    the path (`env` adds or overrides variables); returns what it printed, or fails the test with the end of
    stderr."""
    offline = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cwd / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, **offline, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout
