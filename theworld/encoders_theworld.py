"""World encoders: the frozen models that give TheWorld its latent view of each image, behind one contract.

A world encoder is an `nn.Module` that turns world pixels into a normalised latent grid:

    forward(world_pixel_values)  # (num_images, 3, S, S) in [-1, 1], S a multiple of `spatial_compression`
        -> (num_images, latent_channels, latent_frames, S / spatial_compression, S / spatial_compression)

normalised so each channel is roughly zero-mean with unit scale. Frames is 1 today; the axis is there for world models
that predict future frames. The projector, placeholders, latent cache and checkpoint code depend on nothing else.

The contract, which `WorldEncoder` implements for the built-in encoders and a plugin class implements the same way
(duck-typed: a plugin needs neither `theworld` nor this file):

- class attributes `encoder_type`, `description`, `default_repository`, `default_subfolder`, `default_image_size`,
  `architecture_keys` (the config keys a checkpoint's encoder must match), `api_version` (`WORLD_ENCODER_API_VERSION`)
  and `requires` (distribution -> version specifier, e.g. `{"diffusers": ">=0.35.0"}`);
- class methods `from_pretrained(name_or_path, subfolder=None, revision=None, dtype=None, **hub_kwargs)` (the frozen
  weights of a repository) and `from_config(config)` (the same architecture, random weights);
- the property `config` (a JSON-serialisable dict, recorded in `TheWorldConfig.world_encoder_config`) and the integer
  properties `latent_channels`, `latent_frames` and `spatial_compression`.
- optionally `init_buffers()`, which restores constant buffers that are not saved (after a build on the meta device).

Built in: `wan2.1` (Cosmos-Predict2 / Wan 2.1 VAE), `wan2.2`, `autoencoder-kl` (any diffusers 2D `AutoencoderKL`),
`vjepa2` and `dinov2`. Installed packages add more through the entry-point group `theworld.world_encoders`.
"""

import os
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderKLWan, ModelMixin
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME as DIFFUSERS_WEIGHTS_NAME
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from safetensors import safe_open
from torch import nn
from transformers import Dinov2Model, PreTrainedModel, VJEPA2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .configuration_theworld import unmet_requirements

# Version of the contract above. A plugin states the version it implements; a different one is refused.
WORLD_ENCODER_API_VERSION = 1
# The entry-point group through which installed packages add world encoders (name: encoder type, value: the class).
WORLD_ENCODER_ENTRY_POINT = "theworld.world_encoders"
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "proxies")
# safetensors dtype names of floating-point weights.
SAFETENSORS_FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def hub_download_kwargs(hub_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The Hub arguments (`HUB_KWARGS`) that huggingface_hub's downloads take: all but transformers' `proxies`."""
    return {key: value for key, value in hub_kwargs.items() if key in HUB_KWARGS and key != "proxies"}


def optional_file(
    name_or_path: str | os.PathLike,
    filename: str,
    subfolder: str | None = "",
    revision: str | None = None,
    **hub_kwargs,
) -> str | None:
    """Path of `filename` in a local folder or a Hub repository (downloaded, or found in the Hub cache when offline),
    or None if the repository (or, offline, the cache) has no such file."""
    if os.path.isdir(name_or_path):
        path = Path(name_or_path, subfolder or "", filename)
        return str(path) if path.is_file() else None
    try:
        download = hub_download_kwargs(hub_kwargs)
        return hf_hub_download(str(name_or_path), filename, subfolder=subfolder or None, revision=revision, **download)
    except EntryNotFoundError:
        return None


def stored_dtype(
    name_or_path: str | os.PathLike, filename: str, subfolder: str | None, revision: str | None, **hub_kwargs
) -> torch.dtype:
    """The floating-point dtype a safetensors weights file stores (float32 if there is no such single file)."""
    weights_file = optional_file(name_or_path, filename, subfolder=subfolder, revision=revision, **hub_kwargs)
    if weights_file is None:  # sharded or not safetensors: diffusers' own default
        return torch.float32
    with safe_open(weights_file, framework="pt") as weights:
        stored = [weights.get_slice(name).get_dtype() for name in weights.keys()]
    return next((SAFETENSORS_FLOAT_DTYPES[name] for name in stored if name in SAFETENSORS_FLOAT_DTYPES), torch.float32)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """`dtype` as a torch dtype; None for `"auto"` or None (the dtype the weights are stored in)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype; use e.g. torch.bfloat16, 'bfloat16' or 'auto'.")
    return getattr(torch, dtype)


def config_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """A model configuration as `TheWorldConfig.world_encoder_config` records it: its fields, not its private `_`
    ones (diffusers' `_class_name`, `_diffusers_version`, ...)."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


class WorldEncoder(nn.Module):
    """The built-in world encoders' base: a frozen model (`self.model`) behind the contract of this module."""

    encoder_type: ClassVar[str]
    description: ClassVar[str]
    default_repository: ClassVar[str]
    default_subfolder: ClassVar[str | None] = None
    default_image_size: ClassVar[int]
    architecture_keys: ClassVar[tuple[str, ...]]
    api_version: ClassVar[int] = WORLD_ENCODER_API_VERSION
    requires: ClassVar[dict[str, str]] = {}

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        subfolder: str | None = None,
        revision: str | None = None,
        dtype: torch.dtype | str | None = None,
        **hub_kwargs,
    ) -> "WorldEncoder":
        """The frozen encoder of a repository (Hub id or local folder); `dtype` None or `"auto"`: as stored."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "WorldEncoder":
        """The same architecture as `config` (what `config` returns), with random weights."""
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        return config_fields(self.model.config)

    @property
    def latent_frames(self) -> int:
        return 1

    @property
    def latent_channels(self) -> int:
        raise NotImplementedError

    @property
    def spatial_compression(self) -> int:
        raise NotImplementedError

    def init_buffers(self) -> None:
        """Sets the encoder's constant buffers (normalisation statistics), which are not saved: after a model was
        built on the meta device, `TheWorld.init_weights` calls this."""

    def check_pixels(self, world_pixel_values: torch.Tensor) -> None:
        """Refuses pixels that are not (num_images, 3, S, S) with S a multiple of the spatial compression."""
        shape = tuple(world_pixel_values.shape)
        side = shape[-1] if world_pixel_values.ndim == 4 else 0
        if world_pixel_values.ndim != 4 or shape[1:3] != (3, side) or side % self.spatial_compression:
            raise ValueError(
                f"The {self.encoder_type} world encoder takes (num_images, 3, S, S) pixels in [-1, 1] with S a "
                f"multiple of {self.spatial_compression}; got {shape}. Prepare them with TheWorldProcessor."
            )


class DiffusersVAEWorldEncoder(WorldEncoder):
    """A diffusers VAE (`model_class`), its encoder side only: the decoder side is dropped."""

    model_class: ClassVar[type[ModelMixin]]

    def __init__(self, model: ModelMixin):
        model.decoder = None
        model.post_quant_conv = None
        super().__init__(model)

    @classmethod
    def from_pretrained(cls, name_or_path, subfolder=None, revision=None, dtype=None, **hub_kwargs):
        # For "auto", the dtype the weights are stored in (diffusers itself would load them as float32).
        dtype = resolve_dtype(dtype) or stored_dtype(
            name_or_path, DIFFUSERS_WEIGHTS_NAME, subfolder, revision, **hub_kwargs
        )
        model = cls.model_class.from_pretrained(
            name_or_path, subfolder=subfolder, revision=revision, torch_dtype=dtype, **hub_download_kwargs(hub_kwargs)
        )
        return cls(model)

    @classmethod
    def from_config(cls, config):
        return cls(cls.model_class.from_config(dict(config)))


class WanVAEWorldEncoder(DiffusersVAEWorldEncoder):
    """A Wan VAE (`AutoencoderKLWan`): latent means, normalised with the VAE's own `latents_mean` / `latents_std`."""

    encoder_type = "wan2.1"
    description = "Cosmos-Predict2 / Wan 2.1 VAE (AutoencoderKLWan, 16 channels, 8x)"
    default_repository = "nvidia/Cosmos-Predict2-2B-Video2World"
    default_subfolder = "vae"
    default_image_size = 512
    architecture_keys = ("z_dim", "base_dim", "dim_mult", "temperal_downsample", "patch_size", "is_residual")
    model_class = AutoencoderKLWan

    def __init__(self, model: AutoencoderKLWan):
        super().__init__(model)
        for name in ("latents_mean", "latents_std"):
            self.register_buffer(name, self.latent_statistic(name), persistent=False)

    def latent_statistic(self, name: str) -> torch.Tensor:
        """The VAE config's `latents_mean` or `latents_std`, shaped (1, z, 1, 1, 1)."""
        z_dim, values = self.model.config.z_dim, self.model.config[name]
        if len(values) != z_dim:
            raise ValueError(f"The VAE config's {name} has {len(values)} values; its z_dim is {z_dim}.")
        return torch.tensor(values).view(1, z_dim, 1, 1, 1)

    @torch.no_grad()
    def init_buffers(self) -> None:
        self.latents_mean.copy_(self.latent_statistic("latents_mean"))
        self.latents_std.copy_(self.latent_statistic("latents_std"))

    @property
    def latent_channels(self) -> int:
        return self.model.config.z_dim

    @property
    def spatial_compression(self) -> int:
        # Each temporal-downsample stage halves height and width; Wan 2.2 first folds 2x2 pixel patches into channels.
        return 2 ** len(self.model.config.temperal_downsample) * (self.model.config.get("patch_size") or 1)

    @torch.no_grad()
    def forward(self, world_pixel_values: torch.Tensor) -> torch.Tensor:
        self.check_pixels(world_pixel_values)
        pixels = world_pixel_values.to(self.latents_mean.device, self.model.dtype).unsqueeze(2)  # (n, 3, 1, S, S)
        latents = self.model.encode(pixels).latent_dist.mode()  # (n, z, 1, S/c, S/c)
        return (latents.float() - self.latents_mean) / self.latents_std


class Wan22VAEWorldEncoder(WanVAEWorldEncoder):
    encoder_type = "wan2.2"
    description = "Wan 2.2 VAE (AutoencoderKLWan, 48 channels, 16x)"
    default_repository = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    requires = {"diffusers": ">=0.35.0"}  # the first release whose AutoencoderKLWan has `patch_size` and `is_residual`


class AutoencoderKLWorldEncoder(DiffusersVAEWorldEncoder):
    """A diffusers 2D `AutoencoderKL` (Stable Diffusion, SDXL, FLUX VAEs): latent means, normalised as the
    repository's own pipelines do, `(z - shift_factor) * scaling_factor`."""

    encoder_type = "autoencoder-kl"
    description = "diffusers AutoencoderKL (SD / SDXL / FLUX VAEs; 4 or 16 channels, 8x)"
    default_repository = "stabilityai/stable-diffusion-xl-base-1.0"
    default_subfolder = "vae"
    default_image_size = 512
    architecture_keys = ("latent_channels", "block_out_channels", "layers_per_block", "scaling_factor", "shift_factor")
    model_class = AutoencoderKL

    @property
    def latent_channels(self) -> int:
        return self.model.config.latent_channels

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.model.config.block_out_channels) - 1)

    @torch.no_grad()
    def forward(self, world_pixel_values: torch.Tensor) -> torch.Tensor:
        self.check_pixels(world_pixel_values)
        pixels = world_pixel_values.to(self.model.device, self.model.dtype)
        latents = self.model.encode(pixels).latent_dist.mode().float()  # (n, c, S/8, S/8)
        shift = self.model.config.get("shift_factor") or 0.0
        return ((latents - shift) * self.model.config.scaling_factor).unsqueeze(2)  # (n, c, 1, S/8, S/8)


class VisionBackboneWorldEncoder(WorldEncoder):
    """A transformers vision backbone whose patch features, arranged as the grid, are the latent view: pixels are
    normalised with the ImageNet statistics these models are trained with, features with a parameter-free layer norm.
    """

    model_class: ClassVar[type[PreTrainedModel]]
    architecture_keys = ("hidden_size", "num_hidden_layers", "patch_size", "num_attention_heads")

    def __init__(self, model: PreTrainedModel):
        super().__init__(model)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def init_buffers(self) -> None:
        self.pixel_mean.copy_(torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1))
        self.pixel_std.copy_(torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1))

    @classmethod
    def from_pretrained(cls, name_or_path, subfolder=None, revision=None, dtype=None, **hub_kwargs):
        model = cls.model_class.from_pretrained(
            name_or_path, subfolder=subfolder or "", revision=revision, dtype=dtype or "auto", **hub_kwargs
        )
        return cls(model)

    @classmethod
    def from_config(cls, config):
        return cls(cls.model_class(cls.model_class.config_class(**config)))

    @property
    def config(self) -> dict[str, Any]:
        return config_fields(self.model.config.to_diff_dict())

    @property
    def latent_channels(self) -> int:
        return self.model.config.hidden_size

    @property
    def spatial_compression(self) -> int:
        return self.model.config.patch_size

    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) normalised pixels -> (n, frames * (S/p)^2, hidden) patch features, frame after frame."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, world_pixel_values: torch.Tensor) -> torch.Tensor:
        self.check_pixels(world_pixel_values)
        pixels = (world_pixel_values.to(self.pixel_mean.device).float() + 1) / 2  # [0, 1]
        pixels = ((pixels - self.pixel_mean) / self.pixel_std).to(self.model.dtype)
        features = self.patch_features(pixels).float()  # (n, F * h * w, hidden)
        features = F.layer_norm(features, features.shape[-1:])
        side = world_pixel_values.shape[-1] // self.spatial_compression
        grid = features.reshape(features.shape[0], self.latent_frames, side, side, -1)  # (n, F, h, w, hidden)
        return grid.permute(0, 4, 1, 2, 3).contiguous()  # (n, hidden, F, h, w)


class VJEPA2WorldEncoder(VisionBackboneWorldEncoder):
    """V-JEPA 2 (`VJEPA2Model`), a self-supervised video world model; its encoder only (the predictor is dropped).
    An image is a clip of one tubelet (the frame repeated), so it gives one latent frame."""

    encoder_type = "vjepa2"
    description = "V-JEPA 2 video encoder (VJEPA2Model, patch features, 16x)"
    default_repository = "facebook/vjepa2-vitl-fpc64-256"
    default_image_size = 256
    model_class = VJEPA2Model
    architecture_keys = VisionBackboneWorldEncoder.architecture_keys + ("tubelet_size",)

    def __init__(self, model: VJEPA2Model):
        model.predictor = None
        super().__init__(model)

    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        clip = pixels.unsqueeze(1).repeat(1, self.model.config.tubelet_size, 1, 1, 1)  # (n, T, 3, S, S)
        return self.model.encoder(pixel_values_videos=clip).last_hidden_state


class Dinov2WorldEncoder(VisionBackboneWorldEncoder):
    """DINOv2 (`Dinov2Model`): its last layer's patch features (the class token left out)."""

    encoder_type = "dinov2"
    description = "DINOv2 (Dinov2Model, patch features, 14x)"
    default_repository = "facebook/dinov2-base"
    default_image_size = 224
    model_class = Dinov2Model

    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).last_hidden_state[:, 1:]


BUILT_IN_WORLD_ENCODERS: dict[str, type[WorldEncoder]] = {
    encoder.encoder_type: encoder
    for encoder in (
        WanVAEWorldEncoder,
        Wan22VAEWorldEncoder,
        AutoencoderKLWorldEncoder,
        VJEPA2WorldEncoder,
        Dinov2WorldEncoder,
    )
}


def installed_distribution_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def plugin_entry_point(encoder_type: str):
    """The installed entry point (group `WORLD_ENCODER_ENTRY_POINT`) that offers `encoder_type`, or None."""
    return next((point for point in entry_points(group=WORLD_ENCODER_ENTRY_POINT) if point.name == encoder_type), None)


def world_encoder_plugin(encoder_type: str) -> dict[str, str] | None:
    """`{"package": ..., "version": ...}` of the installed package that offers `encoder_type`; None for a built-in."""
    if encoder_type in BUILT_IN_WORLD_ENCODERS:
        return None
    point = plugin_entry_point(encoder_type)
    if point is None:
        raise unknown_world_encoder(encoder_type)
    return {"package": point.dist.name, "version": point.dist.version}


def unknown_world_encoder(encoder_type: str) -> ValueError:
    return ValueError(
        f"Unknown world encoder {encoder_type!r}: built in are {', '.join(BUILT_IN_WORLD_ENCODERS)}, and no "
        f"installed package offers it (entry-point group {WORLD_ENCODER_ENTRY_POINT!r})."
    )


def compatible_versions(recorded: str) -> SpecifierSet:
    """The plugin versions a checkpoint made with plugin version `recorded` loads with: same major.minor, not older."""
    release = Version(recorded).release
    return SpecifierSet(f"~={'.'.join(map(str, (release + (0, 0))[:3]))}")


def world_encoder_class(encoder_type: str, plugin: Mapping[str, str] | None = None) -> type:
    """The class of world encoder `encoder_type`: a built-in, or one an installed package offers.

    `plugin` is what a checkpoint recorded (`TheWorldConfig.world_encoder_plugin`): the package must be installed at a
    compatible version. The class's manifest (`api_version`, `requires`) is checked against what is installed.
    """
    if encoder_type in BUILT_IN_WORLD_ENCODERS:
        encoder_class = BUILT_IN_WORLD_ENCODERS[encoder_type]
    else:
        point = plugin_entry_point(encoder_type)
        if plugin is not None:
            wanted = compatible_versions(plugin["version"])
            install = f'pip install "{plugin["package"]}{wanted}"'
            installed = installed_distribution_version(plugin["package"])
            if point is None or installed is None:
                raise ImportError(
                    f"This checkpoint's world encoder {encoder_type!r} comes from the package {plugin['package']} "
                    f"{plugin['version']}, which is not installed. Install it: {install}"
                )
            if not wanted.contains(installed, prereleases=True):
                raise ImportError(
                    f"This checkpoint's world encoder {encoder_type!r} was made with {plugin['package']} "
                    f"{plugin['version']}; {installed} is installed, which is not compatible ({wanted}). Install a "
                    f"compatible version: {install}"
                )
        elif point is None:
            raise unknown_world_encoder(encoder_type)
        encoder_class = point.load()
    check_manifest(encoder_class)
    return encoder_class


def check_manifest(encoder_class: type) -> None:
    """Refuses an encoder written for another version of the contract, or needing other library versions than the
    installed ones, saying what to install."""
    name = getattr(encoder_class, "encoder_type", encoder_class.__name__)
    api_version = getattr(encoder_class, "api_version", None)
    if api_version != WORLD_ENCODER_API_VERSION:
        raise ImportError(
            f"The world encoder {name!r} ({encoder_class.__module__}) implements world-encoder API version "
            f"{api_version}; this TheWorld implements version {WORLD_ENCODER_API_VERSION}. Install a release of the "
            "plugin written for this version."
        )
    unmet = unmet_requirements(getattr(encoder_class, "requires", {}))
    if unmet is not None:
        needed, install = unmet
        raise ImportError(f"The world encoder {name!r} needs {needed}. Install with: pip install -U {install}")


__all__ = ["BUILT_IN_WORLD_ENCODERS", "WorldEncoder", "world_encoder_class"]
