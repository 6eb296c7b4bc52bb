"""How TheWorld is built on its bases, loaded, saved and shared: `TheWorldPreTrainedModel`, the base class of
`TheWorld` (in `modeling_theworld.py`, which holds the model itself).

A checkpoint holds only the trained part (world projector, world embeddings, LoRA adapters if any). Loading builds
the frozen Gemma 3 and world encoder from their own repositories, at the commits the checkpoint pins, and checks that
they are the bases it was trained on.
"""

import copy
import os
import tempfile
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from huggingface_hub import CommitInfo, HfApi
from torch import nn
from transformers import AutoTokenizer, Gemma3ForConditionalGeneration, GenerationConfig, PreTrainedModel
from transformers.modeling_utils import load_state_dict
from transformers.utils import logging
from transformers.utils.hub import resolve_revision

from .configuration_theworld import (
    MINIMUM_VERSIONS,
    WORLD_END_TOKEN,
    WORLD_START_TOKEN,
    WORLD_TOKEN,
    TheWorldConfig,
    add_world_tokens,
    rename_legacy_fields,
)
from .encoders_theworld import (
    HUB_KWARGS,
    optional_file,
    resolve_dtype,
    world_encoder_class,
    world_encoder_plugin,
)

WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"
PICKLED_WEIGHTS_NAMES = ("pytorch_model.bin", "model.bin", "pytorch_model.bin.index.json")
AUTO_MAP = {
    "AutoConfig": "configuration_theworld.TheWorldConfig",
    "AutoModel": "modeling_theworld.TheWorld",
    "AutoModelForImageTextToText": "modeling_theworld.TheWorld",
}
# Checked between a checkpoint's recorded Gemma 3 configuration and the base actually loaded (the world encoder's
# keys are its own `architecture_keys`).
GEMMA_ARCHITECTURE_KEYS = ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads", "head_dim")
# Each frozen base: its name in messages -> its (location, pinned revision) config fields.
BASES = {
    "gemma": ("gemma_model_name_or_path", "gemma_revision"),
    "world encoder": ("world_encoder_name_or_path", "world_encoder_revision"),
}
# Arguments of `PreTrainedModel.from_pretrained` that are passed on to the Gemma 3 base load as they are.
GEMMA_LOADING_KWARGS = ("max_memory", "offload_folder", "offload_buffers", "quantization_config")
# Arguments of `PreTrainedModel.from_pretrained` that do not apply to TheWorld, and why.
UNSUPPORTED_LOADING_KWARGS = {
    "gguf_file": "a TheWorld checkpoint is a safetensors file; a GGUF Gemma 3 is a base: build on it with from_bases",
    "variant": f"a TheWorld checkpoint has one weights file, {WEIGHTS_NAME}",
    "state_dict": "the trained weights come from the checkpoint; load others with model.load_trainable_weights(...)",
    "ignore_mismatched_sizes": "the trained part must fit its bases exactly; a mismatch is an error that names it",
    "key_mapping": "TheWorld's weights are saved under TheWorld's own parameter names",
    "tp_plan": "tensor parallelism is not supported; spread the frozen bases with device_map",
    "tp_size": "tensor parallelism is not supported; spread the frozen bases with device_map",
    "device_mesh": "tensor parallelism is not supported; spread the frozen bases with device_map",
    "distributed_config": "tensor parallelism is not supported; spread the frozen bases with device_map",
}
# What transformers itself accepts and no longer uses (`low_cpu_mem_usage`), or what only the Auto classes and
# pipelines read (`trust_remote_code`, `code_revision`, ...): accepted and ignored, as by any Transformers model.
IGNORED_LOADING_KWARGS = (
    "trust_remote_code",
    "code_revision",
    "_from_auto",
    "_from_pipeline",
    "_commit_hash",
    "adapter_kwargs",
    "low_cpu_mem_usage",
)
# The entry-point group through which an installed package (`theworld`) gives `push_to_hub` TheWorld's model card; the
# remote code itself never imports that package.
MODEL_CARD_ENTRY_POINT = "theworld.model_card"
# The language model's attention projections: where LoRA adapters go unless told otherwise.
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
# The blank line Gemma 3's processor puts around each image: a token every Gemma 3 has read in pretraining (a text-only
# base never saw its image boundary tokens). <start_of_world> and <end_of_world> start as its embedding.
BLANK_LINE = "\n\n"

logger = logging.get_logger(__name__)


class TheWorldPreTrainedModel(PreTrainedModel):
    """Building on the bases, the trained part, loading, saving and sharing; the model itself is `TheWorld`."""

    config_class = TheWorldConfig
    base_model_prefix = "gemma"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _no_split_modules = ["Gemma3DecoderLayer", "SiglipEncoderLayer"]

    # ------------------------------------------------------------------ trainable part

    def trained_modules(self) -> list[nn.Module]:
        """The modules whose parameters train: the world projector, the Gemma 3 parts the configuration unfreezes, and
        the LoRA adapter layers (`lora_A`, `lora_B`, ...) of any PEFT adapter on the language model."""
        modules: list[nn.Module] = [self.world_projector]
        if not self.config.freeze_language_model:
            modules += [self.gemma.model.language_model, self.gemma.lm_head]
        if not self.config.freeze_vision_tower:
            modules.append(self.gemma.model.vision_tower)
        if not self.config.freeze_multi_modal_projector:
            modules.append(self.gemma.model.multi_modal_projector)
        if self.config.lora_config is not None:
            adapter_layer = import_peft().tuners.tuners_utils.BaseTunerLayer
            for layer in self.gemma.model.language_model.modules():
                if isinstance(layer, adapter_layer):
                    modules += [getattr(layer, name) for name in layer.adapter_layer_names]
        return modules

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters this configuration trains (and therefore saves), by name: the trained modules' and the
        world position and boundary embeddings."""
        trained = {id(parameter) for module in self.trained_modules() for parameter in module.parameters()}
        trained |= {id(self.world_position_embeddings), id(self.world_boundary_embeddings)}
        return {name: parameter for name, parameter in self.named_parameters() if id(parameter) in trained}

    def apply_freezing(self) -> None:
        """Freezes everything but the parts the configuration trains; trainable parameters are kept in fp32."""
        trainable = self.trainable_parameters()
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(name in trainable)
            if name in trainable and parameter.is_floating_point() and parameter.dtype != torch.float32:
                parameter.data = parameter.data.float()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint holds: exactly the trainable parameters."""
        return {name: parameter.detach() for name, parameter in self.trainable_parameters().items()}

    # ------------------------------------------------------------------ building, saving, loading

    @classmethod
    def from_bases(
        cls,
        gemma_model_name_or_path: str | os.PathLike = "google/gemma-3-4b-it",
        world_encoder_name_or_path: str | os.PathLike | None = None,
        *,
        world_encoder_type: str = "wan2.1",
        gemma_revision: str | None = None,
        world_encoder_revision: str | None = None,
        world_encoder_subfolder: str | None = None,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        **kwargs,
    ) -> "TheWorldPreTrainedModel":
        """A new, untrained TheWorld on two frozen bases (Hub ids or local folders), its world projector initialised.

        The world encoder is `world_encoder_type` (`"wan2.1"`, the Cosmos-Predict2 VAE, by default; see
        `encoders_theworld.py`) from `world_encoder_name_or_path` (default: that type's reference repository), in
        `world_encoder_subfolder` (default: where that type's reference repository keeps it; `""` for the top folder).
        `world_image_size` defaults to the encoder type's own. A local folder is recorded as its absolute path, so the
        checkpoint loads from any working directory. `dtype`, `attn_implementation`, `device_map` and
        `quantization_config` mean what they mean for `from_pretrained`. Remaining keyword arguments are
        `TheWorldConfig` fields (e.g. `world_grid_size=8`) or Hub arguments (`cache_dir`, `token`, ...).
        """
        hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
        gemma_kwargs = {key: kwargs.pop(key) for key in GEMMA_LOADING_KWARGS if key in kwargs}
        gemma_device_map, encoder_device = split_device_map(kwargs.pop("device_map", None))
        encoder_class = world_encoder_class(world_encoder_type)
        if world_encoder_name_or_path is None:
            world_encoder_name_or_path = encoder_class.default_repository
        if world_encoder_subfolder is None:
            world_encoder_subfolder = encoder_class.default_subfolder
        kwargs.setdefault("world_image_size", encoder_class.default_image_size)
        config = TheWorldConfig(
            gemma_model_name_or_path=base_location(gemma_model_name_or_path),
            gemma_revision=pinned_revision(gemma_model_name_or_path, gemma_revision, **hub_kwargs),
            world_encoder_type=world_encoder_type,
            world_encoder_name_or_path=base_location(world_encoder_name_or_path),
            world_encoder_subfolder=world_encoder_subfolder,
            world_encoder_revision=pinned_revision(world_encoder_name_or_path, world_encoder_revision, **hub_kwargs),
            world_encoder_plugin=world_encoder_plugin(world_encoder_type),
            **kwargs,
        )
        config._attn_implementation = attn_implementation
        gemma, world_encoder = load_bases(
            config, dtype=dtype, device_map=gemma_device_map, **gemma_kwargs, **hub_kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(
            config.gemma_model_name_or_path, revision=config.gemma_revision, **hub_kwargs
        )
        token_ids = add_world_tokens(tokenizer)
        config.world_start_token_id = token_ids[WORLD_START_TOKEN]
        config.world_token_id = token_ids[WORLD_TOKEN]
        config.world_end_token_id = token_ids[WORLD_END_TOKEN]
        config.gemma_config = gemma.config
        config.world_encoder_config = world_encoder.config
        config.world_latent_channels = world_encoder.latent_channels
        config.world_latent_frames = world_encoder.latent_frames
        config.world_spatial_compression = world_encoder.spatial_compression
        config.validate()

        model = cls(config, gemma=gemma, world_encoder=world_encoder)
        model.place_world_parts(encoder_device)
        with torch.no_grad():
            embeddings = gemma.get_input_embeddings()
            blank_line = embeddings(torch.tensor([blank_line_id(tokenizer)], device=embeddings.weight.device))
            model.world_boundary_embeddings.copy_(blank_line.float().expand_as(model.world_boundary_embeddings))
        model.generation_config = model.with_world_tokens_suppressed(gemma.generation_config)
        return model.eval()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        config: TheWorldConfig | None = None,
        revision: str | None = None,
        subfolder: str = "",
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        generation_config: GenerationConfig | None = None,
        use_safetensors: bool | None = None,
        **kwargs,
    ) -> "TheWorldPreTrainedModel":
        """Builds the frozen bases from their own repositories, then loads the small checkpoint into the trained part.

        Works on a local folder, a Hub id, or the offline Hub cache. The arguments of `PreTrainedModel.from_pretrained`
        mean the same here: `dtype` (`"auto"`: each base in the dtype its weights are stored in; the trained part is
        always float32), `device_map` (`"auto"`, a device, or a dict over TheWorld's modules: keys under `gemma` go to
        the Gemma 3 load, `world_encoder` places the world encoder; the trained part goes with Gemma's input
        embeddings), `max_memory`, `attn_implementation`, `quantization_config` (the frozen Gemma 3 only),
        `subfolder`, `revision`, `cache_dir`, `token`, `local_files_only`. Config fields given as keyword arguments
        (e.g. `enable_world=False`) override the saved ones. Only safetensors are ever read. The bases load at the
        commits the checkpoint pins; overriding a base to another commit warns, a base of another architecture fails.
        """
        if model_args:
            raise TypeError(f"TheWorld.from_pretrained takes no positional model arguments; got {model_args}.")
        refused = {key: why for key, why in UNSUPPORTED_LOADING_KWARGS.items() if kwargs.get(key) not in (None, False)}
        if use_safetensors is False:
            refused["use_safetensors=False"] = "TheWorld never unpickles weights: checkpoints are safetensors only"
        if refused:
            reasons = "; ".join(f"{key}: {why}" for key, why in refused.items())
            raise ValueError(f"TheWorld.from_pretrained cannot take {sorted(refused)} ({reasons}).")
        for key in (*UNSUPPORTED_LOADING_KWARGS, *IGNORED_LOADING_KWARGS):
            kwargs.pop(key, None)
        dtype = kwargs.pop("torch_dtype", dtype)
        hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
        gemma_kwargs = {key: kwargs.pop(key) for key in GEMMA_LOADING_KWARGS if key in kwargs}
        gemma_device_map, encoder_device = split_device_map(kwargs.pop("device_map", None))
        kwargs = rename_legacy_fields(kwargs)
        checkpoint_kwargs = dict(revision=revision, subfolder=subfolder, **hub_kwargs)
        if config is None:
            config, kwargs = TheWorldConfig.from_pretrained(
                pretrained_model_name_or_path, return_unused_kwargs=True, **checkpoint_kwargs, **kwargs
            )
        else:
            config = copy.deepcopy(config)
            for key in [key for key in kwargs if hasattr(config, key)]:
                setattr(config, key, kwargs.pop(key))
        if kwargs:
            raise TypeError(f"Unexpected arguments for TheWorld.from_pretrained: {sorted(kwargs)}.")
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        config.validate()
        if gemma_kwargs.get("quantization_config") is not None and not config.freeze_language_model:
            raise ValueError(
                "quantization_config quantizes the frozen Gemma 3 base, but this checkpoint trains the whole language "
                "model (freeze_language_model=False); load it without quantization_config."
            )

        weights_file = resolve_weights_file(pretrained_model_name_or_path, **checkpoint_kwargs)
        saved, _ = TheWorldConfig.get_config_dict(pretrained_model_name_or_path, **checkpoint_kwargs)
        check_base_locations(config)
        warn_on_unpinned_bases(saved, config, **hub_kwargs)
        gemma, world_encoder = load_bases(
            config, dtype=dtype, device_map=gemma_device_map, **gemma_kwargs, **hub_kwargs
        )
        check_bases_match(config, gemma, world_encoder)
        model = cls(config, gemma=gemma, world_encoder=world_encoder)
        if config.lora_config is not None:
            model.add_language_model_lora(config.lora_config)
        model.load_trainable_weights(load_state_dict(weights_file), source=str(pretrained_model_name_or_path))
        model.place_world_parts(encoder_device)
        try:
            generation_config = generation_config or GenerationConfig.from_pretrained(
                pretrained_model_name_or_path, **checkpoint_kwargs
            )
        except OSError:
            generation_config = gemma.generation_config
        model.generation_config = model.with_world_tokens_suppressed(generation_config)
        return model.eval()

    def place_world_parts(self, encoder_device: torch.device | str | int | None = None) -> None:
        """Puts the trained part beside Gemma's input embeddings (wherever a `device_map` put them) and the world
        encoder on `encoder_device` (default: the same device); records the placement in `hf_device_map` when Gemma
        has one."""
        embedding_device = self.gemma.get_input_embeddings().weight.device
        encoder_device = embedding_device if encoder_device is None else torch.device(encoder_device)
        self.world_encoder.to(encoder_device)
        self.world_projector.to(embedding_device)
        for parameter in (self.world_position_embeddings, self.world_boundary_embeddings):
            parameter.data = parameter.data.to(embedding_device)
        gemma_device_map = getattr(self.gemma, "hf_device_map", None)
        if gemma_device_map is not None:
            world_parts = ("world_projector", "world_position_embeddings", "world_boundary_embeddings")
            self.hf_device_map = {
                **{f"gemma.{name}" if name else "gemma": device for name, device in gemma_device_map.items()},
                "world_encoder": encoder_device,
                **dict.fromkeys(world_parts, embedding_device),
            }

    def add_language_model_lora(self, lora_config: dict[str, Any]) -> None:
        """Adds PEFT LoRA adapters to Gemma's language model (needs `peft`); they train and save with the projector."""
        peft = import_peft()
        peft.inject_adapter_in_model(peft.LoraConfig(**lora_config), self.gemma.model.language_model)
        self.config.lora_config = dict(lora_config)
        self.apply_freezing()

    def load_trainable_weights(self, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Loads a checkpoint into the trainable part, checking every key and shape."""
        expected = self.trainable_state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        mismatched = [
            f"{name}: checkpoint {tuple(state_dict[name].shape)} vs model {tuple(expected[name].shape)}"
            for name in sorted(set(expected) & set(state_dict))
            if state_dict[name].shape != expected[name].shape
        ]
        if missing or unexpected or mismatched:
            problems = []
            if missing:
                problems.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unexpected:
                problems.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
            if mismatched:
                problems.append(f"shape mismatch {mismatched[:5]}")
            raise ValueError(
                f"The weights in {source} do not fit this TheWorld ({'; '.join(problems)}). The checkpoint was "
                "probably trained with other bases or another world layout; load it with the configuration it was "
                "saved with."
            )
        parameters = dict(self.named_parameters())
        with torch.no_grad():
            for name, tensor in state_dict.items():
                parameters[name].copy_(tensor)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Writes the config (`auto_map`, pinned base revisions), the code files and the trained weights only."""
        self.register_for_auto_class("AutoModel")
        self.config.auto_map = dict(AUTO_MAP)
        kwargs.setdefault("state_dict", self.trainable_state_dict())
        # Keys stay TheWorld's own parameter names (no renaming to the bases' legacy checkpoint layouts).
        kwargs.setdefault("save_original_format", False)
        super().save_pretrained(save_directory, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ) -> CommitInfo:
        """`PreTrainedModel.push_to_hub`, in one commit. README.md is TheWorld's own model card where a package offers
        one (`MODEL_CARD_ENTRY_POINT`: the `theworld` package does), transformers' default card elsewhere."""
        commit = dict(commit_message=commit_message, commit_description=commit_description, create_pr=create_pr)
        tags = tags or []  # transformers' own push_to_hub iterates over them
        model_card_text = installed_model_card_builder()
        if model_card_text is None:
            hub = dict(private=private, max_shard_size=max_shard_size, tags=tags, token=token, revision=revision)
            return super().push_to_hub(repo_id, **hub, **commit)
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            Path(folder, README_NAME).write_text(model_card_text(folder, repo_id=repo_id, tags=tags), encoding="utf-8")
            commit_message = commit.pop("commit_message") or "Upload model"
            return api.upload_folder(
                repo_id=repo_id, folder_path=folder, revision=revision, commit_message=commit_message, **commit
            )


def installed_model_card_builder() -> Callable[..., str] | None:
    """`(saved folder, repo_id=..., tags=...) -> README.md text` from an installed package, if one offers it."""
    for entry_point in entry_points(group=MODEL_CARD_ENTRY_POINT):
        try:
            return entry_point.load()
        except ImportError as error:  # installed but not importable here: transformers' default card
            logger.info(f"The model card of {entry_point.value} is not available ({error}); using the default card.")
    return None


def import_peft() -> ModuleType:
    """The `peft` module: an optional requirement, which only LoRA checkpoints need."""
    try:
        import peft
    except ImportError as error:
        raise ImportError(
            f'This checkpoint has LoRA adapters; install peft (`pip install "peft>={MINIMUM_VERSIONS["peft"]}"`).'
        ) from error
    return peft


def blank_line_id(tokenizer: Any) -> int:
    """The id of `BLANK_LINE`, one token in Gemma 3's tokenizer."""
    (token_id,) = tokenizer.encode(BLANK_LINE, add_special_tokens=False)
    return token_id


def lora_arguments(rank: int, alpha: int | None = None, target_modules: Sequence[str] = LORA_TARGET_MODULES) -> dict:
    """PEFT `LoraConfig` arguments of LoRA adapters on the language model (alpha: twice the rank unless given)."""
    return {"r": rank, "lora_alpha": alpha or 2 * rank, "target_modules": list(target_modules), "lora_dropout": 0.0}


def base_location(name_or_path: str | os.PathLike) -> str:
    """How a config records a base: a local folder as its absolute, resolved path; a Hub id as it is."""
    return str(Path(name_or_path).resolve()) if os.path.isdir(name_or_path) else str(name_or_path)


def is_local_path(location: str) -> bool:
    """Whether `location` can only be a local path: a Hub id is `name` or `namespace/name`."""
    return os.path.isabs(location) or location.startswith((".", "~")) or location.count("/") > 1 or "\\" in location


def check_base_locations(config: TheWorldConfig) -> None:
    """Refuses a base recorded as a local folder that is not there, naming the config field and the override."""
    for base, (field, _) in BASES.items():
        location = getattr(config, field)
        if is_local_path(location) and not os.path.isdir(location):
            raise OSError(
                f"The {base} base of this checkpoint is the local folder {location!r} (`{field}` in its config.json), "
                f"which does not exist on this machine. Point the checkpoint at that base: from_pretrained(..., "
                f"{field}='<folder or Hub id of the same base>')."
            )


def pinned_revision(name_or_path: str | os.PathLike, revision: str | None, **hub_kwargs) -> str | None:
    """The commit hash a Hub repository's `revision` points to; `None` for a local folder."""
    if os.path.isdir(name_or_path):
        return None
    resolved = resolve_revision(
        str(name_or_path),
        revision,
        token=hub_kwargs.get("token"),
        local_files_only=hub_kwargs.get("local_files_only", False),
        cache_dir=hub_kwargs.get("cache_dir"),
    )
    return getattr(resolved, "resolved", resolved)


def warn_on_unpinned_bases(saved_config: dict[str, Any], config: TheWorldConfig, **hub_kwargs) -> None:
    """Warns when a base is loaded at another commit than the one the checkpoint pins (`saved_config`, its
    config.json).

    That only happens on request (a `gemma_revision=` or `*_model_name_or_path=` override), so it is a warning, not
    an error: a mirror or a local copy of the same weights is legitimate. It is never silent, though: the trained part
    was fitted to the pinned weights. Bases of another architecture are refused by `check_bases_match`.
    """
    saved_config = rename_legacy_fields(saved_config)
    for base, (location_field, revision_field) in BASES.items():
        name, revision = getattr(config, location_field), getattr(config, revision_field)
        pinned_name, pinned = saved_config.get(location_field), saved_config.get(revision_field)
        if (name, revision) == (pinned_name, pinned):
            continue
        loaded = pinned_revision(name, revision, **hub_kwargs)
        if loaded is not None and loaded == pinned:
            continue
        logger.warning(
            f"This checkpoint was trained on the {base} base {pinned_name!r} at commit "
            f"{pinned or '(unpinned, a local folder)'}, but {name!r} at "
            f"{loaded or 'a commit that cannot be checked (a local folder)'} is loaded instead, as requested. Outputs "
            "may differ from the checkpoint author's; drop the override to load the pinned base."
        )


def split_device_map(device_map: Any) -> tuple[Any, torch.device | str | int | None]:
    """(Gemma 3's `device_map`, the world encoder's device) from a `device_map` over TheWorld.

    A device or a strategy (`"auto"`, `"cpu"`, `0`, ...) goes to the Gemma 3 load, and the world encoder follows
    Gemma's input embeddings. A dict maps TheWorld's module names to devices: `"gemma"` or a module under it
    (`"gemma.model.language_model"`, ...) for the Gemma 3 load, `"world_encoder"` for the world encoder, `""` for
    everything else.
    """
    if not isinstance(device_map, dict):
        return device_map, None
    unknown = [key for key in device_map if key not in ("", "world_encoder", "gemma") and not key.startswith("gemma.")]
    if unknown:
        raise ValueError(
            f"device_map keys {unknown} name no part of TheWorld a device can be chosen for: use '' (everything), "
            "'world_encoder', 'gemma' or a module under it ('gemma.model.language_model', ...). The trained part "
            "always goes with Gemma's input embeddings."
        )
    gemma_map = {
        key.removeprefix("gemma").removeprefix("."): device
        for key, device in device_map.items()
        if key == "gemma" or key.startswith("gemma.")
    }
    if not gemma_map and "" in device_map:
        gemma_map = {"": device_map[""]}
    return gemma_map or None, device_map.get("world_encoder", device_map.get(""))


def load_bases(
    config: TheWorldConfig, dtype: torch.dtype | str | None = None, **kwargs
) -> tuple[Gemma3ForConditionalGeneration, nn.Module]:
    """Loads the frozen Gemma 3 and the world encoder (alone: a VAE without the rest of its pipeline) from their own
    repositories.

    `kwargs` are Hub arguments (`HUB_KWARGS`, for both) and Gemma 3 loading arguments (`device_map` and
    `GEMMA_LOADING_KWARGS`, for Gemma only); Gemma's attention implementation is the config's.
    """
    hub_kwargs = {key: value for key, value in kwargs.items() if key in HUB_KWARGS}
    resolve_dtype(dtype)  # first: a bad `dtype` fails before anything loads
    encoder_class = world_encoder_class(config.world_encoder_type, config.world_encoder_plugin)
    gemma = Gemma3ForConditionalGeneration.from_pretrained(
        config.gemma_model_name_or_path,
        revision=config.gemma_revision,
        dtype="auto" if dtype is None else dtype,
        attn_implementation=config._attn_implementation,
        **kwargs,
    )
    world_encoder = encoder_class.from_pretrained(
        config.world_encoder_name_or_path,
        subfolder=config.world_encoder_subfolder,
        revision=config.world_encoder_revision,
        dtype=dtype,
        **hub_kwargs,
    )
    return gemma, world_encoder


def check_bases_match(config: TheWorldConfig, gemma: Gemma3ForConditionalGeneration, world_encoder: nn.Module) -> None:
    """Refuses bases whose architecture differs from the one the checkpoint was trained on, naming both."""
    saved_text, loaded_text = config.get_text_config(), gemma.config.get_text_config()
    differences = [
        f"gemma {key}: checkpoint {getattr(saved_text, key)} vs base {getattr(loaded_text, key)}"
        for key in GEMMA_ARCHITECTURE_KEYS
        if getattr(saved_text, key) != getattr(loaded_text, key)
    ]
    saved_encoder, loaded_encoder = config.world_encoder_config, world_encoder.config
    # A key one side lacks was added to (or dropped from) the model class by another library release: not compared.
    differences += [
        f"world encoder {key}: checkpoint {saved_encoder[key]} vs base {loaded_encoder[key]}"
        for key in world_encoder.architecture_keys
        if key in saved_encoder.keys() & loaded_encoder.keys()
        and as_list(saved_encoder[key]) != as_list(loaded_encoder[key])
    ]
    if differences:
        raise ValueError(
            f"This checkpoint was trained on other bases than {config.gemma_model_name_or_path!r} and "
            f"{config.world_encoder_name_or_path!r}: {'; '.join(differences)}. Load it with the bases named in its "
            "config.json."
        )


def as_list(value: Any) -> list:
    """JSON's view of a config value: tuples and lists alike."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def resolve_weights_file(pretrained_model_name_or_path: str | os.PathLike, revision: str | None, **hub_kwargs) -> str:
    """Path of the checkpoint's `model.safetensors`; pickled weights are refused, never unpickled."""
    weights_file = optional_file(pretrained_model_name_or_path, WEIGHTS_NAME, revision=revision, **hub_kwargs)
    if weights_file is not None:
        return weights_file
    for pickled in PICKLED_WEIGHTS_NAMES:
        if optional_file(pretrained_model_name_or_path, pickled, revision=revision, **hub_kwargs):
            raise OSError(
                f"{pretrained_model_name_or_path} offers only pickled weights ({pickled}); TheWorld loads safetensors "
                f"only, because unpickling can run arbitrary code. Ask its author for a {WEIGHTS_NAME}."
            )
    raise OSError(
        f"{pretrained_model_name_or_path} has no {WEIGHTS_NAME}: the checkpoint is incomplete. Save it again with "
        "model.save_pretrained(...) or point at the folder that holds it."
    )


__all__ = ["TheWorldPreTrainedModel"]
