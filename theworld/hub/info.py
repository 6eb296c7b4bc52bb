"""What a TheWorld checkpoint holds, local or on the Hub, from its config and the safetensors header alone."""

import math
import os
from dataclasses import dataclass
from typing import Any

from ..configuration_theworld import PROJECTOR_TYPES, TheWorldConfig
from ..encoders_theworld import BUILT_IN_WORLD_ENCODERS
from .files import (
    EVAL_NAME,
    REMOTE_CODE_FILES,
    WEIGHTS_NAME,
    Checkpoint,
    load_config,
    open_checkpoint,
    read_json,
    remote_code_digests,
    remote_code_hash,
)


@dataclass(frozen=True)
class SplitResult:
    """Overall accuracy on one evaluated split, with the world path on and ablated (world tokens zeroed)."""

    split: str
    examples: int
    world: float
    ablated: float

    @property
    def gain(self) -> float:
        return self.world - self.ablated


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint's bases, trained part, size, code hash and evaluation, known without loading any weights."""

    location: str
    commit: str | None
    config: TheWorldConfig
    tensor_shapes: dict[str, list[int]]
    weights_bytes: int
    code_digests: dict[str, str]
    evaluation: dict[str, Any] | None

    @property
    def trainable_parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.tensor_shapes.values())

    @property
    def code_hash(self) -> str | None:
        """`remote_code_hash` of the remote code files; None if the checkpoint lacks one."""
        return remote_code_hash(self.code_digests) if len(self.code_digests) == len(REMOTE_CODE_FILES) else None

    def bases(self) -> dict[str, tuple[str, str | None]]:
        """Role -> (repository or path, pinned commit) of the two frozen bases (the world encoder's weights are in
        `world_encoder_subfolder`)."""
        config = self.config
        return {
            "gemma": (config.gemma_model_name_or_path, config.gemma_revision),
            "world encoder": (config.world_encoder_name_or_path, config.world_encoder_revision),
        }

    def world_encoder(self) -> str:
        """The world encoder's type, what it is, and the plugin package that offers it, if any."""
        config = self.config
        encoder_class = BUILT_IN_WORLD_ENCODERS.get(config.world_encoder_type)
        text = config.world_encoder_type + (f" ({encoder_class.description})" if encoder_class else "")
        plugin = config.world_encoder_plugin
        return text + (f", from the plugin package {plugin['package']} {plugin['version']}" if plugin else "")

    def world_layout(self) -> str:
        config = self.config
        size, grid = config.world_image_size, config.world_grid_size
        return (
            f"{config.num_world_tokens} world tokens per image: the {config.world_encoder_type} latent grid of a "
            f"{size}x{size} view, cut into a {grid}x{grid} grid, through a {PROJECTOR_TYPES[config.projector_type]} "
            "projector"
        )

    def trainable_parts(self) -> list[str]:
        config = self.config
        parts = ["world projector", "<start_of_world>/<end_of_world> embeddings"]
        if config.lora_config is not None:
            lora = config.lora_config
            targets = ", ".join(lora.get("target_modules") or [])
            parts.append(f"LoRA on the language model (r={lora.get('r')}, alpha={lora.get('lora_alpha')}: {targets})")
        if not config.freeze_language_model:
            parts.append("the whole Gemma language model")
        if not config.freeze_vision_tower:
            parts.append("the SigLIP vision tower")
        if not config.freeze_multi_modal_projector:
            parts.append("Gemma's multi-modal projector")
        return parts

    def results(self) -> list[SplitResult]:
        """Overall results per evaluated split (`theworld eval` report), if an evaluation was found."""
        return [
            SplitResult(split, report["examples"], report["world"]["accuracy"], report["world_ablated"]["accuracy"])
            for split, report in (self.evaluation or {}).items()
        ]


def checkpoint_info(repo_or_dir: str | os.PathLike, revision: str | None = None) -> CheckpointInfo:
    """Reads a checkpoint folder or Hub repository (at `revision`), with its `eval.json` if it has one (for a folder,
    also the one beside it, where a `theworld train` run keeps it)."""
    return read_info(open_checkpoint(repo_or_dir, revision=revision))


def read_info(checkpoint: Checkpoint, evaluation: dict[str, Any] | None = None) -> CheckpointInfo:
    """`CheckpointInfo` of an opened checkpoint; `evaluation` replaces the checkpoint's own `eval.json`."""
    return CheckpointInfo(
        location=checkpoint.location,
        commit=checkpoint.commit,
        config=load_config(checkpoint),
        tensor_shapes=checkpoint.tensor_shapes(),
        weights_bytes=checkpoint.weights_bytes(),
        code_digests=remote_code_digests(checkpoint.read),
        evaluation=evaluation if evaluation is not None else read_json(checkpoint, EVAL_NAME),
    )


def format_info(info: CheckpointInfo) -> str:
    """The `theworld info` text."""
    missing_code = sorted(set(REMOTE_CODE_FILES) - set(info.code_digests))
    lines = [f"checkpoint: {info.location}" + (f" (commit {info.commit})" if info.commit else "")]
    for role, (name, commit) in info.bases().items():
        lines.append(f"{role} base: {name} @ {commit or 'unpinned (local folder)'}")
    if info.config.world_encoder_subfolder:
        lines[-1] += f" (in {info.config.world_encoder_subfolder}/)"
    lines += [
        f"world encoder: {info.world_encoder()}",
        f"world: {info.world_layout()}",
        f"trained: {'; '.join(info.trainable_parts())}",
        f"trainable parameters: {info.trainable_parameters:,} in {len(info.tensor_shapes)} tensors",
        f"size: {info.weights_bytes:,} bytes ({WEIGHTS_NAME})",
        f"remote code sha256: {info.code_hash or 'incomplete, missing ' + ', '.join(missing_code)}",
    ]
    results = info.results()
    if results:
        lines.append("evaluation (accuracy, world on / world ablated):")
        lines += [
            f"  {r.split}: {r.world:.1%} / {r.ablated:.1%} ({r.gain * 100:+.1f} points), {r.examples} examples"
            for r in results
        ]
    else:
        lines.append("evaluation: none found")
    return "\n".join(lines)
