"""An example world-encoder plugin for TheWorld: a frozen random projection of each pixel patch.

It implements the world-encoder contract (see TheWorld's `encoders_theworld.py`) without importing TheWorld, and
registers under the type `pixel-patches` through the entry-point group `theworld.world_encoders` (pyproject.toml).
Its repository layout: `config.json` ({"patch_size": ..., "channels": ...}) and `model.safetensors`.
"""

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class PixelPatchEncoder(nn.Module):
    """(n, 3, S, S) in [-1, 1] -> (n, channels, 1, S/p, S/p): each p x p patch through one frozen linear map, then
    a parameter-free layer norm over the channels."""

    # The manifest TheWorld checks before use.
    encoder_type: ClassVar[str] = "pixel-patches"
    description: ClassVar[str] = "frozen random projections of pixel patches (an example plugin)"
    default_repository: ClassVar[str] = "someone/pixel-patches"
    default_subfolder: ClassVar[str | None] = None
    default_image_size: ClassVar[int] = 64
    architecture_keys: ClassVar[tuple[str, ...]] = ("patch_size", "channels")
    api_version: ClassVar[int] = 1
    requires: ClassVar[dict[str, str]] = {"torch": ">=2.0"}

    def __init__(self, patch_size: int = 8, channels: int = 16):
        super().__init__()
        self.patch_size, self.channels = patch_size, channels
        self.projection = nn.Linear(3 * patch_size * patch_size, channels)
        self.requires_grad_(False)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PixelPatchEncoder":
        return cls(**config)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, subfolder=None, revision=None, dtype=None, **hub_kwargs
    ) -> "PixelPatchEncoder":
        def path(filename: str) -> str:
            if os.path.isdir(name_or_path):
                return str(Path(name_or_path, subfolder or "", filename))
            download = {key: value for key, value in hub_kwargs.items() if key != "proxies"}
            return hf_hub_download(str(name_or_path), filename, subfolder=subfolder, revision=revision, **download)

        encoder = cls.from_config(json.loads(Path(path(CONFIG_NAME)).read_text(encoding="utf-8")))
        encoder.load_state_dict(load_file(path(WEIGHTS_NAME)))
        if dtype not in (None, "auto"):
            encoder.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        return encoder.eval()

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config), encoding="utf-8")
        save_file(self.state_dict(), directory / WEIGHTS_NAME)

    @property
    def config(self) -> dict[str, Any]:
        return {"patch_size": self.patch_size, "channels": self.channels}

    @property
    def latent_channels(self) -> int:
        return self.channels

    @property
    def latent_frames(self) -> int:
        return 1

    @property
    def spatial_compression(self) -> int:
        return self.patch_size

    @torch.no_grad()
    def forward(self, world_pixel_values: torch.Tensor) -> torch.Tensor:
        n, _, height, width = world_pixel_values.shape
        if height != width or height % self.patch_size:
            raise ValueError(f"pixel-patches takes square images with a side that is a multiple of {self.patch_size}.")
        side = height // self.patch_size
        pixels = world_pixel_values.to(self.projection.weight)
        patches = F.pixel_unshuffle(pixels, self.patch_size).flatten(2).transpose(1, 2)  # (n, side^2, 3 p^2)
        features = F.layer_norm(self.projection(patches), (self.channels,))  # (n, side^2, channels)
        return features.transpose(1, 2).reshape(n, self.channels, 1, side, side)
