"""TheWorld configuration: a frozen Gemma 3 and a frozen Cosmos VAE joined by a small trainable world projector."""

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from packaging.version import Version

# The oldest releases this code runs on; pyproject.toml states the same range. Checked before anything else is
# imported from them, so an older installation fails here with a message that says what to install. peft is only
# needed for LoRA checkpoints, but an older one installed breaks diffusers' import.
MINIMUM_VERSIONS = {"transformers": "5.21.0", "diffusers": "0.34.0", "peft": "0.18.0"}
OPTIONAL_LIBRARIES = ("peft",)


def check_library_versions() -> None:
    """Raises an ImportError naming the installed and the needed version of any library older than TheWorld needs."""
    too_old = {}
    for name, minimum in MINIMUM_VERSIONS.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed is None and name in OPTIONAL_LIBRARIES:
            continue
        if installed is None or Version(installed) < Version(minimum):
            too_old[name] = (minimum, installed)
    if too_old:
        needed = ", ".join(
            f"{name}>={minimum} (installed: {found or 'none'})" for name, (minimum, found) in too_old.items()
        )
        upgrade = " ".join(f'"{name}>={minimum}"' for name, (minimum, _) in too_old.items())
        raise ImportError(f"TheWorld needs {needed}. Upgrade with: pip install -U {upgrade}")


check_library_versions()

from huggingface_hub.dataclasses import strict  # noqa: E402
from transformers import Gemma3Config, PreTrainedConfig  # noqa: E402

WORLD_START_TOKEN = "<start_of_world>"
WORLD_TOKEN = "<world_soft_token>"
WORLD_END_TOKEN = "<end_of_world>"
WORLD_TOKENS = (WORLD_START_TOKEN, WORLD_TOKEN, WORLD_END_TOKEN)

PROJECTOR_TYPES = {"linear": "linear", "mlp": "two-layer MLP"}  # type -> what it is
MAX_WORLD_TOKENS = 4096
VAE_CONFIG_KEYS = ("z_dim", "latents_mean", "latents_std", "temperal_downsample")


def vae_config_fields(vae_config: Mapping[str, Any]) -> dict[str, Any]:
    """A VAE configuration as `TheWorldConfig.vae_config` records it: diffusers' fields, not its private `_` ones."""
    return {key: value for key, value in vae_config.items() if not key.startswith("_")}


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
        cosmos_model_name_or_path (`str`, defaults to `"nvidia/Cosmos-Predict2-2B-Video2World"`):
            Hub id or local path of the Cosmos-Predict2 repository whose VAE is used.
        cosmos_subfolder (`str`, defaults to `"vae"`):
            Subfolder of that repository holding the `AutoencoderKLWan`.
        cosmos_revision (`str`, *optional*):
            Pinned revision (commit hash) of the Cosmos repository. `None` for a local folder.
        gemma_config (`Gemma3Config` or `dict`, *optional*):
            Configuration of the Gemma 3 base, so the architecture is known without loading it.
        vae_config (`dict`, *optional*):
            The diffusers configuration of the VAE (`AutoencoderKLWan`).
        world_image_size (`int`, defaults to 512):
            Side of the square image the VAE encodes, in pixels.
        world_grid_size (`int`, defaults to 16):
            The VAE latent is cut into `world_grid_size x world_grid_size` patches, one world token each.
        projector_type (`str`, defaults to `"mlp"`):
            `"linear"` or `"mlp"` (two layers with a GELU between them).
        world_start_token_id, world_token_id, world_end_token_id (`int`, *optional*):
            Ids of `<start_of_world>`, `<world_soft_token>` and `<end_of_world>`.
        enable_world (`bool`, defaults to `True`):
            With `False` the model is exactly its Gemma 3 base.
        freeze_language_model, freeze_vision_tower, freeze_multi_modal_projector (`bool`, defaults to `True`):
            Which parts of Gemma 3 stay frozen. The VAE is always frozen; the world projector always trains.
        lora_config (`dict`, *optional*):
            PEFT `LoraConfig` arguments of LoRA adapters on the language model, if any were trained.
    """

    model_type = "theworld"
    sub_configs_defaults = {"gemma_config": Gemma3Config}

    gemma_model_name_or_path: str = "google/gemma-3-4b-it"
    gemma_revision: str | None = None
    cosmos_model_name_or_path: str = "nvidia/Cosmos-Predict2-2B-Video2World"
    cosmos_subfolder: str = "vae"
    cosmos_revision: str | None = None
    gemma_config: PreTrainedConfig | dict[str, Any] | None = None
    vae_config: dict[str, Any] | None = None
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

    @property
    def num_world_tokens(self) -> int:
        return self.world_grid_size**2

    @property
    def vae_spatial_compression(self) -> int:
        """Pixels per latent cell along one side (8 for the Wan VAE)."""
        return 2 ** len(self.vae_config["temperal_downsample"])

    @property
    def world_latent_size(self) -> int:
        return self.world_image_size // self.vae_spatial_compression

    @property
    def world_token_dim(self) -> int:
        """Features per world token: latent channels times the cells of one grid patch."""
        patch = self.world_latent_size // self.world_grid_size
        return self.vae_config["z_dim"] * patch * patch

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
        if self.vae_config is None:
            return
        missing = [key for key in VAE_CONFIG_KEYS if key not in self.vae_config]
        if missing:
            raise ValueError(f"vae_config lacks {missing}; pass the `config` of the AutoencoderKLWan in use.")
        z_dim = self.vae_config["z_dim"]
        for key in ("latents_mean", "latents_std"):
            if len(self.vae_config[key]) != z_dim:
                raise ValueError(f"vae_config[{key!r}] has {len(self.vae_config[key])} values; z_dim is {z_dim}.")
        step = self.vae_spatial_compression * self.world_grid_size
        if self.world_image_size <= 0 or self.world_image_size % step:
            raise ValueError(
                f"world_image_size={self.world_image_size} must be a positive multiple of {step} "
                f"(VAE compression {self.vae_spatial_compression} x world_grid_size {self.world_grid_size})."
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
