"""`theworld bench`: what TheWorld costs over the Gemma 3 it wraps.

Presets `micro` and `small` measure random models built in the real repository layouts and loaded through
`TheWorld.from_bases` (training step, world-token sweep, generation, loading, latent cache); `real-meta` computes
real-scale figures on the `meta` device (parameters, checkpoint bytes, training-memory estimate, FLOPs). See
`harness.py` for how time and memory are measured and `meta.py` for the memory estimate.
"""

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers

from .presets import PRESETS, MeasuredPreset
from .report import format_result, measured_targets, meta_targets


def run_benchmark(
    preset_name: str, output: str | os.PathLike | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Runs a preset, writes the result as JSON to `output` (if given) and returns it.

    `threads` sets `torch.set_num_threads` for the run (on a shared machine, 1 thread gives steadier timings).
    """
    preset = PRESETS[preset_name]
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(preset, MeasuredPreset):
        from .cases import measured_figures

        with tempfile.TemporaryDirectory(prefix="theworld-bench-") as directory:
            figures = measured_figures(preset, Path(directory), device)
        targets = measured_targets(figures)
    else:
        from .meta import meta_figures

        device = torch.device("meta")
        figures = meta_figures(preset)
        targets = meta_targets(figures)
    result = {
        "preset": preset.name,
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "diffusers": diffusers.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
            "threads": torch.get_num_threads(),
        },
        "settings": dataclasses.asdict(preset),
        "figures": figures,
        "targets": [target.as_dict() for target in targets],
    }
    if output is not None:
        Path(output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


__all__ = ["PRESETS", "format_result", "run_benchmark"]
