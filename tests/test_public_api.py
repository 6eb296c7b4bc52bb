"""The public API, held against a snapshot (tests/public_api.json): the names `theworld` exports, the signatures
users call, and the command-line options. An accidental change fails here; a deliberate one rewrites the snapshot
with `THEWORLD_UPDATE_API_SNAPSHOT=1 python -m pytest tests/test_public_api.py` and shows in the diff."""

import argparse
import inspect
import json
import os
from pathlib import Path

import theworld
from theworld import TheWorld, TheWorldConfig, TheWorldProcessor
from theworld.cli import COMMANDS

SNAPSHOT = Path(__file__).with_name("public_api.json")


def command_line_usage() -> dict[str, str]:
    """Each subcommand's usage line: its positional arguments and options."""
    usage = {}
    for name, add_arguments in COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"theworld {name}")
        add_arguments(parser)
        usage[name] = " ".join(parser.format_usage().split())
    return usage


def public_api() -> dict:
    callables = {
        "TheWorld.forward": TheWorld.forward,
        "TheWorld.generate": TheWorld.generate,
        "TheWorld.from_pretrained": TheWorld.from_pretrained,
        "TheWorld.from_bases": TheWorld.from_bases,
        "TheWorldConfig.__init__": TheWorldConfig.__init__,
        "TheWorldProcessor.__call__": TheWorldProcessor.__call__,
    }
    return {
        "exports": sorted(theworld.__all__),
        "signatures": {name: str(inspect.signature(function)) for name, function in callables.items()},
        "command_line": command_line_usage(),
    }


def test_the_public_api_is_the_snapshot(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # usage on one line, whatever the terminal
    current = public_api()
    if os.environ.get("THEWORLD_UPDATE_API_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())
