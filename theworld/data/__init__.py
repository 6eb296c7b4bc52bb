"""VSR data: loading the real benchmark files, relation meta-categories and a synthetic default set."""

from .relations import META_CATEGORIES, meta_category
from .synth import (
    SYNTH_RELATIONS,
    ZERO_SHOT_CONCEPTS,
    SceneObject,
    describe_scene,
    random_scene,
    relation_holds,
    render_scene,
    synthesize_vsr,
)
from .vsr import (
    VSRExample,
    VSRSplit,
    load_image,
    load_vsr,
    load_vsr_split,
    vsr_as_dataset,
    vsr_example_from_row,
)

__all__ = [
    "META_CATEGORIES",
    "SYNTH_RELATIONS",
    "ZERO_SHOT_CONCEPTS",
    "SceneObject",
    "VSRExample",
    "VSRSplit",
    "describe_scene",
    "load_image",
    "load_vsr",
    "load_vsr_split",
    "meta_category",
    "random_scene",
    "relation_holds",
    "render_scene",
    "synthesize_vsr",
    "vsr_as_dataset",
    "vsr_example_from_row",
]
