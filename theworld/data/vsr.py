"""Loading VSR (Visual Spatial Reasoning) splits from jsonl files and an image folder."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

if TYPE_CHECKING:
    from datasets import DatasetDict

__all__ = [
    "VSRExample",
    "VSRSplit",
    "load_image",
    "load_vsr",
    "load_vsr_split",
    "vsr_as_dataset",
    "vsr_example_from_row",
]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
REQUIRED_FIELDS: tuple[str, ...] = ("image", "caption", "label", "relation")
_SHOWN_BAD_IMAGES = 5

OnBadImage = Literal["error", "skip"]
ON_BAD_IMAGE_HELP = "a missing or unreadable image stops the run (error) or is left out (skip)"


@dataclass(frozen=True)
class VSRExample:
    """One caption about one image; `label` is 1 if the caption is true of the image, else 0."""

    image: str
    image_path: Path
    caption: str
    label: int
    relation: str
    subj: str | None = None
    obj: str | None = None


@dataclass
class VSRSplit:
    """The usable examples of one split, and the rows left out for bad images.

    `bad_images` holds `(line number, image file name, reason)` for every row that was skipped.
    """

    examples: list[VSRExample]
    bad_images: list[tuple[int, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)


def vsr_example_from_row(row: Mapping[str, Any], images_dir: str | Path, where: str = "row") -> VSRExample:
    """Build a `VSRExample` from a VSR row (a parsed jsonl line or a `datasets` row).

    Fields other than the VSR ones are ignored. `where` names the row in error messages.

    Raises:
        ValueError: if `image`, `caption`, `label` or `relation` is missing or malformed.
    """
    missing = [name for name in REQUIRED_FIELDS if row.get(name) is None]
    if missing:
        raise ValueError(f"{where}: missing required field(s) {', '.join(map(repr, missing))}")
    for name in ("image", "caption", "relation"):
        if not isinstance(row[name], str) or not row[name]:
            raise ValueError(f"{where}: field {name!r} must be a non-empty string, got {row[name]!r}")
    label = row["label"]
    if isinstance(label, bool) or not isinstance(label, Integral) or label not in (0, 1):
        raise ValueError(f"{where}: field 'label' must be the integer 0 or 1, got {label!r}")
    return VSRExample(
        image=row["image"],
        image_path=Path(images_dir) / row["image"],
        caption=row["caption"],
        label=int(label),
        relation=row["relation"],
        subj=row.get("subj"),
        obj=row.get("obj"),
    )


def _read_rows(jsonl_path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """Yield `(line number, row)` for every non-blank line of a jsonl file."""
    with jsonl_path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{jsonl_path}:{line_number}: invalid JSON ({err})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{jsonl_path}:{line_number}: expected a JSON object, got {row!r}")
            yield line_number, row


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, raising a `ValueError` that names the file if that fails."""
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    # Decoders of malformed files raise many exception types (OSError, SyntaxError, struct.error...).
    except Exception as err:
        raise ValueError(f"cannot decode image {path}: {err}") from err
    return image


def load_image(path: str | Path) -> Image.Image:
    """Load an image as RGB; transparent pixels are composited onto white.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file cannot be decoded (corrupt, truncated or not an image).
    """
    image = _open_image(Path(path))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _image_problem(path: Path) -> str | None:
    """Return why `path` is not a usable image, or None if it decodes fully."""
    if not path.is_file():
        return "file not found"
    try:
        with _open_image(path):
            return None
    except ValueError as err:
        return f"cannot decode: {err.__cause__}"


def _check_images(paths: Iterable[Path], cache: dict[Path, str | None]) -> None:
    """Fill `cache` with the problem (or None) of every path not yet in it, decoding in threads."""
    todo = sorted({path for path in paths if path not in cache})
    with ThreadPoolExecutor() as pool:
        cache.update(zip(todo, pool.map(_image_problem, todo), strict=True))


def _bad_image_summary(bad: list[tuple[int, str, str]], jsonl_path: Path) -> str:
    shown = "; ".join(f"line {line}: {image} ({reason})" for line, image, reason in bad[:_SHOWN_BAD_IMAGES])
    more = f"; and {len(bad) - _SHOWN_BAD_IMAGES} more" if len(bad) > _SHOWN_BAD_IMAGES else ""
    return f"{len(bad)} row(s) of {jsonl_path} have a missing or unreadable image: {shown}{more}"


def _load_split(
    jsonl_path: Path,
    images_dir: Path,
    on_bad_image: OnBadImage,
    cache: dict[Path, str | None],
) -> VSRSplit:
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    numbered = [
        (line, vsr_example_from_row(row, images_dir, where=f"{jsonl_path}:{line}"))
        for line, row in _read_rows(jsonl_path)
    ]
    _check_images((example.image_path for _, example in numbered), cache)
    bad = [(line, ex.image, cache[ex.image_path]) for line, ex in numbered if cache[ex.image_path] is not None]
    if bad and on_bad_image == "error":
        raise ValueError(
            f"{_bad_image_summary(bad, jsonl_path)}. Pass on_bad_image='skip' "
            "(CLI option --on-bad-image skip) to leave these rows out."
        )
    if bad:
        logger.warning("Skipping %s", _bad_image_summary(bad, jsonl_path))
    examples = [example for _, example in numbered if cache[example.image_path] is None]
    return VSRSplit(examples=examples, bad_images=bad)


def load_vsr_split(jsonl_path: str | Path, images_dir: str | Path, on_bad_image: OnBadImage = "error") -> VSRSplit:
    """Load one VSR jsonl file, checking that every row's image exists and decodes.

    Each distinct image file is decoded once. Rows whose image is missing or unreadable are never
    dropped silently: with `on_bad_image="error"` a `ValueError` lists them; with `"skip"` they are
    left out, recorded in `VSRSplit.bad_images` and reported in a logged warning.

    Raises:
        ValueError: on a malformed row (naming file and line), or on bad images with `"error"`.
    """
    return _load_split(Path(jsonl_path), Path(images_dir), on_bad_image, cache={})


def load_vsr(
    data_dir: str | Path,
    images_dir: str | Path | None = None,
    splits: Iterable[str] = SPLITS,
    on_bad_image: OnBadImage = "error",
) -> dict[str, VSRSplit]:
    """Load `{split}.jsonl` from `data_dir` for each split; images default to `data_dir/images`.

    An image shared by several splits is checked once. See `load_vsr_split` for `on_bad_image`.
    """
    data_dir = Path(data_dir)
    images_dir = data_dir / "images" if images_dir is None else Path(images_dir)
    cache: dict[Path, str | None] = {}
    return {split: _load_split(data_dir / f"{split}.jsonl", images_dir, on_bad_image, cache) for split in splits}


def vsr_as_dataset(
    data_dir: str | Path,
    splits: Iterable[str] = SPLITS,
    cache_dir: str | Path | None = None,
) -> DatasetDict:
    """Load the `{split}.jsonl` files of `data_dir` as a `datasets.DatasetDict` (rows unchanged).

    Each file is read on its own, so splits may differ in columns (extra fields, `subj`/`obj`).
    Rows of this or of a Hub copy (`load_dataset("cambridgeltl/vsr_random", data_files=...)`) become
    examples with `vsr_example_from_row(row, images_dir)`; images are not checked here.
    """
    from datasets import DatasetDict, load_dataset

    return DatasetDict(
        {
            split: load_dataset(
                "json",
                data_files=str(Path(data_dir) / f"{split}.jsonl"),
                split="train",
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
            for split in splits
        }
    )
