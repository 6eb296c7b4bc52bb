"""The one Markdown table format of every report `theworld` writes (model card, evaluation, benchmarks, scale)."""

from collections.abc import Iterable
from typing import Any


def markdown_table(header: Iterable[str], rows: Iterable[Iterable[Any]], numeric: int = 0) -> str:
    """A Markdown table; the last `numeric` columns are right-aligned."""
    header = list(header)
    rule = ["---"] * (len(header) - numeric) + ["---:"] * numeric
    return "\n".join("| " + " | ".join(str(cell) for cell in row) + " |" for row in [header, rule, *rows])
