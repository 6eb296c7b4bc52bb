"""Prints `name==minimum` for each named dependency of pyproject.toml: the oldest versions the project supports."""

import sys
from pathlib import Path

import tomllib

dependencies = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
lower_bounds = {}
for requirement in dependencies:
    name, _, bounds = requirement.partition(">=")
    if bounds:
        lower_bounds[name.strip()] = bounds.split(",")[0].strip()
missing = [name for name in sys.argv[1:] if name not in lower_bounds]
if missing:
    sys.exit(f"pyproject.toml states no lower bound for {missing}")
print(" ".join(f"{name}=={lower_bounds[name]}" for name in sys.argv[1:]))
