"""Tiny random stand-ins for the built-in world encoders other than the Cosmos VAE (`tiny.make_tiny_bases` builds
that one), each saved in the layout of the real repository it stands for and loaded through the same
`from_pretrained` call:

- `wan2.2`: `Wan-AI/Wan2.2-TI2V-5B-Diffusers` (`model_index.json`, `vae/`): 48 channels, 16x;
- `autoencoder-kl`: `black-forest-labs/FLUX.1-dev` (`model_index.json`, `vae/`): 16 channels, 8x, with a shift factor;
- `vjepa2`: `facebook/vjepa2-vitl-fpc64-256` (`config.json`, `model.safetensors`): patch 16, tubelets of 2 frames;
- `dinov2`: `facebook/dinov2-base` (`config.json`, `model.safetensors`): patch 14.
"""

import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderKLWan
from transformers import Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model

from .tiny import write_vae_repository

WAN22_LATENT_CHANNELS = 48


def tiny_wan22_vae() -> AutoencoderKLWan:
    """A Wan 2.2 VAE in miniature: residual blocks, 2x2 pixel patches folded into channels, 48 latent channels."""
    channels = torch.arange(WAN22_LATENT_CHANNELS, dtype=torch.float32)
    return AutoencoderKLWan(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=WAN22_LATENT_CHANNELS,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        patch_size=2,
        in_channels=12,
        out_channels=12,
        scale_factor_spatial=16,
        latents_mean=(0.01 * channels - 0.2).tolist(),
        latents_std=(0.5 + 0.02 * channels).tolist(),
    )


def tiny_autoencoder_kl() -> AutoencoderKL:
    """A FLUX-style `AutoencoderKL` in miniature: 16 channels, 8x, no quant convs, scaling and shift factors."""
    blocks = 4
    return AutoencoderKL(
        block_out_channels=[8, 16, 16, 16],
        down_block_types=["DownEncoderBlock2D"] * blocks,
        up_block_types=["UpDecoderBlock2D"] * blocks,
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def tiny_vjepa2_config(**overrides: Any) -> VJEPA2Config:
    return VJEPA2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2.0,
        patch_size=16,
        tubelet_size=2,
        crop_size=64,
        frames_per_clip=2,
        pred_hidden_size=16,
        pred_num_hidden_layers=1,
        pred_num_attention_heads=2,
        pred_num_mask_tokens=2,
        num_pooler_layers=1,
        architectures=["VJEPA2Model"],
        **overrides,
    )


def tiny_dinov2_config(**overrides: Any) -> Dinov2Config:
    return Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=56,
        architectures=["Dinov2Model"],
        **overrides,
    )


# Encoder type -> (the real repository the stand-in is laid out like, the world image size tests use with it).
TINY_WORLD_ENCODERS = {
    "wan2.2": ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", 64),
    "autoencoder-kl": ("black-forest-labs/FLUX.1-dev", 64),
    "vjepa2": ("facebook/vjepa2-vitl-fpc64-256", 64),
    "dinov2": ("facebook/dinov2-base", 56),
}


def make_tiny_world_encoder(encoder_type: str, directory: str | os.PathLike, seed: int = 0) -> Path:
    """Writes the tiny stand-in of `encoder_type` (a key of `TINY_WORLD_ENCODERS`) to `directory` and returns it.
    The same seed gives the same weights."""
    directory = Path(directory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if encoder_type == "wan2.2":
            write_vae_repository(tiny_wan22_vae(), directory, "WanPipeline")
        elif encoder_type == "autoencoder-kl":
            write_vae_repository(tiny_autoencoder_kl(), directory, "FluxPipeline")
        elif encoder_type == "vjepa2":
            VJEPA2Model(tiny_vjepa2_config()).save_pretrained(directory)
        elif encoder_type == "dinov2":
            Dinov2Model(tiny_dinov2_config()).save_pretrained(directory)
        else:
            raise ValueError(
                f"No tiny stand-in for world encoder {encoder_type!r}; there are: {list(TINY_WORLD_ENCODERS)}."
            )
    return directory


__all__ = ["TINY_WORLD_ENCODERS", "make_tiny_world_encoder"]
