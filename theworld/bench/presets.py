"""Benchmark presets: model sizes and run lengths.

`micro` and `small` build random base models in the real repository layouts (`theworld.testing.tiny.make_tiny_bases`
with the preset's sizes) and measure them; `small-real` measures the pretrained Gemma 3 270M (the small real base) with
a small random VAE; `real-meta` builds the real configurations on the `meta` device and computes what needs no weights
(parameters, checkpoint bytes, a training-memory estimate, FLOPs).
"""

from dataclasses import dataclass, replace
from typing import Any

from ..loading_theworld import LORA_TARGET_MODULES


@dataclass(frozen=True)
class MeasuredPreset:
    """Sizes of the random bases and of the runs of a measured benchmark.

    Real image sizes are scaled down together: SigLIP sees `vision["image_size"]` pixels (896 in Gemma 3 4B) and
    gives `mm_tokens_per_image` image tokens (256); the VAE sees `world_image_size` pixels (512 by default).
    """

    name: str
    text: dict[str, Any]
    vision: dict[str, Any]
    mm_tokens_per_image: int
    vae: dict[str, Any]
    world_image_size: int
    world_grid_size: int
    # World grid sizes of the token sweep (world tokens = grid size squared); the latent patch per token stays fixed.
    sweep_grid_sizes: tuple[int, ...]
    batch_size: int
    image_size: int  # side of the synthetic data set's images
    warmup: int
    repeats: int
    new_tokens: int  # generated per generation call (greedy, KV cache)
    load_repeats: int
    epoch_examples: int
    epoch_repeats: int
    # The pretrained Gemma 3 270M (`theworld.testing.small_real_base`) instead of a random Gemma of the `text` and
    # `vision` sizes; the VAE stays random.
    small_real_gemma: bool = False


@dataclass(frozen=True)
class MetaPreset:
    """A real-scale estimate on the `meta` device: one training batch of VSR questions, one image each."""

    name: str
    batch_sizes: tuple[int, ...]
    # Tokens of a VSR prompt and answer besides the image tokens (chat template, question, caption, answer), with the
    # real Gemma 3 tokenizer; an assumption, since the tokenizer cannot be downloaded here.
    text_tokens: int
    world_grid_sizes: tuple[int, ...]
    lora_rank: int
    lora_target_modules: tuple[str, ...] = LORA_TARGET_MODULES
    # Mixed precision: frozen weights in bf16; trainable weights, gradients and AdamW states in fp32.
    frozen_bytes_per_parameter: int = 2


MICRO = MeasuredPreset(
    name="micro",
    text={},
    vision={},
    mm_tokens_per_image=16,
    vae={"num_res_blocks": 1},
    world_image_size=32,
    world_grid_size=4,
    sweep_grid_sizes=(2, 4),
    batch_size=2,
    image_size=32,
    warmup=1,
    repeats=2,
    new_tokens=3,
    load_repeats=1,
    epoch_examples=4,
    epoch_repeats=1,
)

SMALL = MeasuredPreset(
    name="small",
    text={
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "query_pre_attn_scalar": 64,
    },
    vision={
        "hidden_size": 192,
        "intermediate_size": 768,
        "num_hidden_layers": 3,
        "num_attention_heads": 3,
        "image_size": 224,
        "patch_size": 14,
    },
    mm_tokens_per_image=64,
    vae={"base_dim": 16, "num_res_blocks": 2},
    world_image_size=128,
    world_grid_size=16,
    sweep_grid_sizes=(8, 16, 32),
    batch_size=2,
    image_size=256,
    warmup=2,
    repeats=9,
    new_tokens=16,
    load_repeats=9,
    epoch_examples=16,
    epoch_repeats=5,
)

# MICRO's world layout at the 270M's image size, with more repeats.
SMALL_REAL = replace(
    MICRO,
    name="small-real",
    world_image_size=64,
    batch_size=4,
    image_size=64,
    repeats=3,
    new_tokens=8,
    load_repeats=2,
    epoch_examples=8,
    small_real_gemma=True,
)

REAL_META = MetaPreset(name="real-meta", batch_sizes=(1, 8), text_tokens=40, world_grid_sizes=(16, 64), lora_rank=16)

PRESETS: dict[str, MeasuredPreset | MetaPreset] = {
    preset.name: preset for preset in (MICRO, SMALL, SMALL_REAL, REAL_META)
}
