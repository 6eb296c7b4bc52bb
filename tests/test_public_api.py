"""The public API, held against a snapshot (tests/public_api.json): the names `theworld` exports, the signatures
users call, and the command-line options. An accidental change fails here; a deliberate one rewrites the snapshot
with `THEWORLD_UPDATE_API_SNAPSHOT=1 python -m pytest tests/test_public_api.py` and shows in the diff."""

import dataclasses
import inspect
import json
import os
from pathlib import Path

import pytest

import theworld
from theworld import TheWorld, TheWorldConfig, TheWorldProcessor
from theworld.cli import COMMANDS, build_parser
from theworld.text_oracle import TextOracleConfig
from theworld.training import EvaluationConfig, TrainingConfig

SNAPSHOT = Path(__file__).with_name("public_api.json")


def command_line_usage() -> dict[str, str]:
    """Each subcommand's usage line: its positional arguments and options."""
    usage = {}
    for name in COMMANDS:
        _, parser = build_parser(name)
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


@pytest.mark.parametrize(
    ("command", "config"),
    [("train", TrainingConfig), ("eval", EvaluationConfig), ("text-oracle", TextOracleConfig)],
)
def test_every_option_of_train_eval_and_text_oracle_has_help_text(command, config, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    _, parser = build_parser(command)
    shown = " ".join(parser.format_help().split())
    for field in dataclasses.fields(config):
        assert field.metadata.get("help"), f"{field.name} has no help text"
        assert f"--{field.name.replace('_', '-')}" in shown or f"--{field.name}" in shown
        assert " ".join(field.metadata["help"].split()) in shown, field.name
