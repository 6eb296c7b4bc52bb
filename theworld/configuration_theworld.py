"""TheWorld configuration: a frozen Gemma 3 and a frozen world encoder joined by a small trainable world projector."""

from collections.abc import Collection, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from packaging.specifiers import SpecifierSet

# The oldest releases this code runs on; pyproject.toml states the same range. Checked before anything else is
# imported from them, so an older installation fails here with a message that says what to install. peft is only
# needed for LoRA checkpoints, but an older one installed breaks diffusers' import.
MINIMUM_VERSIONS = {"transformers": "5.21.0", "diffusers": "0.34.0", "peft": "0.18.0"}
OPTIONAL_LIBRARIES = ("peft",)


def unmet_requirements(requirements: Mapping[str, str], optional: Collection[str] = ()) -> tuple[str, str] | None:
    """For the `requirements` (distribution -> version specifier, e.g. `{"diffusers": ">=0.35.0"}`) the installed
    distributions do not meet: what is needed and installed (`diffusers>=0.35.0 (installed: 0.34.0)`, ...) and the
    `pip install` arguments that meet them (`"diffusers>=0.35.0"`). None when all are met; an `optional` distribution
    may be missing. A pre-release counts as its release (a dev build of 5.25 meets `>=5.21.0`)."""
    unmet = {}
    for name, specifier in requirements.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed is None and name in optional:
            continue
        if installed is None or not SpecifierSet(specifier).contains(installed, prereleases=True):
            unmet[name] = (specifier, installed)
    if not unmet:
        return None
    needed = ", ".join(f"{name}{spec} (installed: {found or 'none'})" for name, (spec, found) in unmet.items())
    return needed, " ".join(f'"{name}{spec}"' for name, (spec, _) in unmet.items())


def check_library_versions() -> None:
    """Raises an ImportError naming the installed and the needed version of any library older than TheWorld needs."""
    minimums = {name: f">={minimum}" for name, minimum in MINIMUM_VERSIONS.items()}
    unmet = unmet_requirements(minimums, optional=OPTIONAL_LIBRARIES)
    if unmet is not None:
        needed, install = unmet
        raise ImportError(f"TheWorld needs {needed}. Upgrade with: pip install -U {install}")


check_library_versions()

from huggingface_hub.dataclasses import strict  # noqa: E402
from transformers import Gemma3Config, PreTrainedConfig  # noqa: E402

WORLD_START_TOKEN = "<start_of_world>"
WORLD_TOKEN = "<world_soft_token>"
WORLD_END_TOKEN = "<end_of_world>"
WORLD_TOKENS = (WORLD_START_TOKEN, WORLD_TOKEN, WORLD_END_TOKEN)

PROJECTOR_TYPES = {  # type -> what it is
    "linear": "linear",
    "mlp": "two-layer MLP",
    "transformer": "two-layer transformer across the grid",
}
MAX_WORLD_TOKENS = 4096
# Fields of checkpoints saved before world encoders were pluggable (always the Wan 2.1 VAE of Cosmos-Predict2), and
# the fields that took their place; such checkpoints load unchanged.
LEGACY_FIELDS = {
    "cosmos_model_name_or_path": "world_encoder_name_or_path",
    "cosmos_subfolder": "world_encoder_subfolder",
    "cosmos_revision": "world_encoder_revision",
}
LEGACY_VAE_CONFIG = "vae_config"


def rename_legacy_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` (config fields or `from_pretrained` overrides) with the pre-world-encoder names renamed."""
    fields = {LEGACY_FIELDS.get(key, key): value for key, value in fields.items()}
    vae_config = fields.pop(LEGACY_VAE_CONFIG, None)
    if vae_config is not None:  # the Wan 2.1 VAE: 2x per temporal-downsample stage, one latent frame
        fields.setdefault("world_encoder_config", dict(vae_config))
        fields.setdefault("world_latent_channels", vae_config["z_dim"])
        fields.setdefault("world_latent_frames", 1)
        fields.setdefault("world_spatial_compression", 2 ** len(vae_config["temperal_downsample"]))
    return fields


def add_world_tokens(tokenizer: Any) -> dict[str, int]:
    """Adds the world special tokens to `tokenizer` (if missing) and returns their ids by token string.

    New tokens take the next free ids. Gemma 3 has more embedding rows than tokenizer entries, so the ids land in
    spare rows and the embedding matrix is never resized.
    """
    missing = [token for token in WORLD_TOKENS if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return {token: tokenizer.convert_tokens_to_ids(token) for token in WORLD_TOKENS}


@strict
class TheWorldConfig(PreTrainedConfig):
    r"""
    Configuration of [`TheWorld`].

    Args:
        gemma_model_name_or_path (`str`, defaults to `"google/gemma-3-4b-it"`):
            Hub id or local path of the frozen Gemma 3 vision-language model.
        gemma_revision (`str`, *optional*):
            Pinned revision (commit hash) of the Gemma 3 repository. `None` for a local folder.
        world_encoder_type (`str`, defaults to `"wan2.1"`):
            The frozen world encoder: a built-in type (`wan2.1`, the Cosmos-Predict2 VAE; `wan2.2`; `autoencoder-kl`;
            `vjepa2`; `dinov2`) or one an installed package offers (entry-point group `theworld.world_encoders`).
        world_encoder_name_or_path (`str`, defaults to `"nvidia/Cosmos-Predict2-2B-Video2World"`):
            Hub id or local path of the repository holding the world encoder.
        world_encoder_subfolder (`str`, *optional*, defaults to `"vae"`):
            Subfolder of that repository holding the encoder's weights.
        world_encoder_revision (`str`, *optional*):
            Pinned revision (commit hash) of that repository. `None` for a local folder.
        world_encoder_config (`dict`, *optional*):
            The configuration of the world encoder's model (e.g. the diffusers config of the `AutoencoderKLWan`).
        world_encoder_plugin (`dict`, *optional*):
            `{"package": ..., "version": ...}` of the installed package that offers a plugin encoder; `None` for a
            built-in one.
        world_latent_channels, world_latent_frames, world_spatial_compression (`int`, *optional*):
            What the world encoder declares: channels and frames of its latent grid, and pixels per latent cell along
            one side.
        gemma_config (`Gemma3Config` or `dict`, *optional*):
            Configuration of the Gemma 3 base, so the architecture is known without loading it.
        world_image_size (`int`, defaults to 512):
            Side of the square image the world encoder sees, in pixels.
        world_grid_size (`int`, defaults to 16):
            The latent grid is cut into `world_grid_size x world_grid_size` patches, one world token each.
        projector_type (`str`, defaults to `"mlp"`):
            `"linear"`, `"mlp"` (two layers with a GELU between them), each mapping every patch on its own, or
            `"transformer"` (two pre-norm transformer layers of width 256 across all patches of an image).
        world_start_token_id, world_token_id, world_end_token_id (`int`, *optional*):
            Ids of `<start_of_world>`, `<world_soft_token>` and `<end_of_world>`.
        enable_world (`bool`, defaults to `True`):
            With `False` the model is exactly its Gemma 3 base.
        freeze_language_model, freeze_vision_tower, freeze_multi_modal_projector (`bool`, defaults to `True`):
            Which parts of Gemma 3 stay frozen. The world encoder is always frozen; the world projector always trains.
        lora_config (`dict`, *optional*):
            PEFT `LoraConfig` arguments of LoRA adapters on the language model, if any were trained.
    """

    model_type = "theworld"
    sub_configs_defaults = {"gemma_config": Gemma3Config}

    gemma_model_name_or_path: str = "google/gemma-3-4b-it"
    gemma_revision: str | None = None
    world_encoder_type: str = "wan2.1"
    world_encoder_name_or_path: str = "nvidia/Cosmos-Predict2-2B-Video2World"
    world_encoder_subfolder: str | None = "vae"
    world_encoder_revision: str | None = None
    world_encoder_config: dict[str, Any] | None = None
    world_encoder_plugin: dict[str, str] | None = None
    world_latent_channels: int | None = None
    world_latent_frames: int | None = None
    world_spatial_compression: int | None = None
    gemma_config: PreTrainedConfig | dict[str, Any] | None = None
    world_image_size: int = 512
    world_grid_size: int = 16
    projector_type: str = "mlp"
    world_start_token_id: int | None = None
    world_token_id: int | None = None
    world_end_token_id: int | None = None
    enable_world: bool = True
    freeze_language_model: bool = True
    freeze_vision_tower: bool = True
    freeze_multi_modal_projector: bool = True
    lora_config: dict[str, Any] | None = None

    def __post_init__(self, **kwargs) -> None:
        legacy = {key: kwargs.pop(key) for key in (*LEGACY_FIELDS, LEGACY_VAE_CONFIG) if key in kwargs}
        for key, value in rename_legacy_fields(legacy).items():
            setattr(self, key, value)
        super().__post_init__(**kwargs)

    @property
    def num_world_tokens(self) -> int:
        return self.world_grid_size**2

    @property
    def world_latent_size(self) -> int:
        """Side of the world encoder's latent grid, in cells."""
        return self.world_image_size // self.world_spatial_compression

    @property
    def world_latent_shape(self) -> tuple[int, int, int, int]:
        """(channels, frames, height, width) of one image's latent grid."""
        size = self.world_latent_size
        return (self.world_latent_channels, self.world_latent_frames, size, size)

    @property
    def world_token_dim(self) -> int:
        """Features per world token: latent channels times frames times the cells of one grid patch."""
        patch = self.world_latent_size // self.world_grid_size
        return self.world_latent_channels * self.world_latent_frames * patch * patch

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PreTrainedConfig:
        return self.gemma_config.get_text_config(decoder=decoder, encoder=encoder)

    def validate_world_layout(self) -> None:
        """Rejects unknown or inconsistent world settings with a message that says what is allowed."""
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(
                f"projector_type={self.projector_type!r} is not supported; choose one of {', '.join(PROJECTOR_TYPES)}."
            )
        if not 1 <= self.num_world_tokens <= MAX_WORLD_TOKENS:
            raise ValueError(
                f"world_grid_size={self.world_grid_size} gives {self.num_world_tokens} world tokens; "
                f"use a grid size from 1 to {int(MAX_WORLD_TOKENS**0.5)} (1 to {MAX_WORLD_TOKENS} tokens)."
            )
        declared = (self.world_latent_channels, self.world_latent_frames, self.world_spatial_compression)
        if self.world_encoder_config is None:
            return
        if any(not isinstance(value, int) or value < 1 for value in declared):
            raise ValueError(
                f"world_latent_channels, world_latent_frames and world_spatial_compression are {declared}; they are "
                "what the world encoder declares. Build the model with TheWorld.from_bases(...)."
            )
        step = self.world_spatial_compression * self.world_grid_size
        if self.world_image_size <= 0 or self.world_image_size % step:
            raise ValueError(
                f"world_image_size={self.world_image_size} must be a positive multiple of {step} (the "
                f"{self.world_encoder_type} encoder's compression {self.world_spatial_compression} x world_grid_size "
                f"{self.world_grid_size})."
            )

    def validate_world_token_ids(self) -> None:
        """World token ids must be distinct rows of Gemma's embedding matrix (no resize ever happens)."""
        ids = [self.world_start_token_id, self.world_token_id, self.world_end_token_id]
        if all(token_id is None for token_id in ids):
            return
        if any(token_id is None for token_id in ids) or len(set(ids)) != 3:
            raise ValueError(f"world token ids {ids} must be three distinct integers (or all None).")
        vocab_size = self.get_text_config().vocab_size
        if max(ids) >= vocab_size:
            raise ValueError(
                f"world token ids {ids} do not fit Gemma's {vocab_size} embedding rows; the tokenizer has more tokens "
                "than the base model has rows. Use a Gemma 3 base whose embedding has spare rows."
            )


__all__ = ["TheWorldConfig"]
