"""VSR relations and their meta-categories, as grouped by the benchmark's analysis scripts."""

from __future__ import annotations

import json
from importlib import resources

__all__ = ["META_CATEGORIES", "meta_category"]


def _load_meta_categories() -> dict[str, list[str]]:
    """Read the packaged grouping, keeping each relation in its first category only.

    The published file lists "among" under both Topological and Unallocated; Topological comes
    first, so "among" is counted once, as Topological.
    """
    text = resources.files(__package__).joinpath("relation_meta_categories.json").read_text("utf-8")
    seen: set[str] = set()
    categories: dict[str, list[str]] = {}
    for category, relations in json.loads(text).items():
        categories[category] = [relation for relation in relations if relation not in seen]
        seen.update(relations)
    return categories


META_CATEGORIES: dict[str, list[str]] = _load_meta_categories()
"""The 7 meta-categories (Adjacency, Directional, Orientation, Projective, Proximity, Topological,
Unallocated) mapped to their relations; every relation appears in exactly one category."""

_CATEGORY_OF: dict[str, str] = {
    relation: category for category, relations in META_CATEGORIES.items() for relation in relations
}


def meta_category(relation: str) -> str:
    """Return the meta-category of a VSR relation, e.g. `meta_category("left of") == "Projective"`.

    Raises:
        ValueError: if `relation` is not one of the benchmark's relations. Unknown relations are an
            error rather than a silent "Unallocated", so typos and foreign data sets surface early.
    """
    try:
        return _CATEGORY_OF[relation]
    except KeyError:
        raise ValueError(
            f"unknown VSR relation {relation!r}; the {len(_CATEGORY_OF)} known relations are listed "
            "in theworld.data.META_CATEGORIES"
        ) from None
