"""TheWorld: Gemma 3 that also sees a Cosmos world model's latent view of each image.

The frozen Cosmos VAE encodes each image into a latent grid; a small trainable projector turns that grid into world
tokens, which are scattered into the `<world_soft_token>` placeholders that `TheWorldProcessor` puts in the text.
Everything else is the frozen Gemma 3, so generation, the KV cache, padding and batching work exactly as in Gemma 3.
"""

import copy
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import AutoencoderKLWan
from torch import nn
from transformers import (
    AutoTokenizer,
    Gemma3ForConditionalGeneration,
    GenerationConfig,
    GenerationMixin,
    PreTrainedModel,
)
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import load_state_dict
from transformers.utils import cached_file, logging
from transformers.utils.hub import hf_api, resolve_revision

from .configuration_theworld import WORLD_END_TOKEN, WORLD_START_TOKEN, WORLD_TOKEN, TheWorldConfig, add_world_tokens

WEIGHTS_NAME = "model.safetensors"
PICKLED_WEIGHTS_NAMES = ("pytorch_model.bin", "model.bin", "pytorch_model.bin.index.json")
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "proxies")
AUTO_MAP = {
    "AutoConfig": "configuration_theworld.TheWorldConfig",
    "AutoModel": "modeling_theworld.TheWorld",
    "AutoModelForImageTextToText": "modeling_theworld.TheWorld",
}
# Checked between a checkpoint's recorded base configurations and the bases actually loaded.
GEMMA_ARCHITECTURE_KEYS = ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads", "head_dim")
VAE_ARCHITECTURE_KEYS = ("z_dim", "base_dim", "dim_mult", "temperal_downsample")
BASES = ("gemma", "cosmos")

logger = logging.get_logger(__name__)


class TheWorldProjector(nn.Module):
    """Maps flattened latent patches to Gemma's embedding space: (n, N, token_dim) -> (n, N, hidden)."""

    def __init__(self, config: TheWorldConfig):
        super().__init__()
        hidden_size = config.get_text_config().hidden_size
        if config.projector_type == "linear":
            self.layers = nn.Sequential(nn.Linear(config.world_token_dim, hidden_size))
        else:
            self.layers = nn.Sequential(
                nn.Linear(config.world_token_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
            )

    def forward(self, world_patches: torch.Tensor) -> torch.Tensor:
        return self.layers(world_patches)


class TheWorld(PreTrainedModel, GenerationMixin):
    """Gemma 3 (frozen) + Cosmos VAE encoder (frozen) + trainable world projector and world boundary embeddings."""

    config_class = TheWorldConfig
    base_model_prefix = "theworld"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _no_split_modules = ["Gemma3DecoderLayer", "SiglipEncoderLayer"]
    # `(saved folder, repo_id=..., tags=...) -> README.md text`, set by the `theworld` package (`theworld.hub.card`).
    # This file is also the remote code, which never imports `theworld`: without the package it stays None and
    # `push_to_hub` writes transformers' default model card.
    model_card_builder: ClassVar[Callable[..., str] | None] = None

    def __init__(
        self,
        config: TheWorldConfig,
        gemma: Gemma3ForConditionalGeneration | None = None,
        vae: AutoencoderKLWan | None = None,
    ):
        super().__init__(config)
        if config.vae_config is None:
            raise ValueError("TheWorldConfig.vae_config is None; build a new model with TheWorld.from_bases(...).")
        self.gemma = gemma if gemma is not None else Gemma3ForConditionalGeneration(config.gemma_config)
        config.gemma_config = self.gemma.config
        self.vae = vae if vae is not None else AutoencoderKLWan.from_config(config.vae_config)
        # Only the encoder is ever used: drop the decoder side of the frozen VAE.
        self.vae.decoder = None
        self.vae.post_quant_conv = None
        self.world_projector = TheWorldProjector(config)
        hidden_size = config.get_text_config().hidden_size
        # Where each world token's latent patch lies in the image, so attention that finds an object by content also
        # reads its position (RoPE only relates positions inside attention scores, not in what is read).
        self.world_position_embeddings = nn.Parameter(torch.zeros(config.num_world_tokens, hidden_size))
        # Embeddings of <start_of_world> and <end_of_world>, already in Gemma's scaled embedding space.
        self.world_boundary_embeddings = nn.Parameter(torch.zeros(2, hidden_size))
        z_dim = config.vae_config["z_dim"]
        self.register_buffer(
            "latents_mean", torch.tensor(config.vae_config["latents_mean"]).view(1, z_dim, 1, 1), persistent=False
        )
        self.register_buffer(
            "latents_std", torch.tensor(config.vae_config["latents_std"]).view(1, z_dim, 1, 1), persistent=False
        )
        self.post_init()
        self.apply_freezing()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The bases come with their own weights: only TheWorld's own parts are initialised here.
        std = self.config.get_text_config().initializer_range
        if isinstance(module, TheWorldProjector):
            for layer in module.layers:
                if isinstance(layer, nn.Linear):
                    layer.weight.normal_(mean=0.0, std=std)
                    layer.bias.zero_()
        elif isinstance(module, TheWorld):
            module.world_boundary_embeddings.normal_(mean=0.0, std=std)
            module.world_position_embeddings.normal_(mean=0.0, std=std)

    # ------------------------------------------------------------------ trainable part

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters this configuration trains (and therefore saves), by name."""
        prefixes = ["world_projector.", "world_boundary_embeddings", "world_position_embeddings"]
        if not self.config.freeze_language_model:
            prefixes += ["gemma.model.language_model.", "gemma.lm_head."]
        if not self.config.freeze_vision_tower:
            prefixes.append("gemma.model.vision_tower.")
        if not self.config.freeze_multi_modal_projector:
            prefixes.append("gemma.model.multi_modal_projector.")
        has_lora = self.config.lora_config is not None
        return {
            name: parameter
            for name, parameter in self.named_parameters()
            if name.startswith(tuple(prefixes)) or (has_lora and "lora_" in name)
        }

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

    # ------------------------------------------------------------------ world path

    def get_input_embeddings(self) -> nn.Module:
        return self.gemma.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.gemma.set_input_embeddings(value)

    @torch.no_grad()
    def encode_world(self, world_pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised VAE latent means: (n, 3, S, S) in [-1, 1] -> (n, z_dim, S/8, S/8)."""
        size = self.config.world_image_size
        if world_pixel_values.ndim != 4 or tuple(world_pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(
                f"world_pixel_values must have shape (num_images, 3, {size}, {size}) with values in [-1, 1]; got "
                f"{tuple(world_pixel_values.shape)}. Prepare them with TheWorldProcessor."
            )
        pixels = world_pixel_values.to(device=self.vae.device, dtype=self.vae.dtype).unsqueeze(2)  # (n, 3, 1, S, S)
        latents = self.vae.encode(pixels).latent_dist.mode()[:, :, 0]  # (n, z_dim, S/8, S/8)
        return (latents.float() - self.latents_mean) / self.latents_std

    def project_world(self, world_latents: torch.Tensor) -> torch.Tensor:
        """World tokens from normalised latents: (n, z_dim, h, w) -> (n, num_world_tokens, hidden)."""
        z_dim, size, grid = self.config.vae_config["z_dim"], self.config.world_latent_size, self.config.world_grid_size
        if world_latents.ndim != 4 or tuple(world_latents.shape[1:]) != (z_dim, size, size):
            raise ValueError(
                f"world_latents must have shape (num_images, {z_dim}, {size}, {size}); got "
                f"{tuple(world_latents.shape)}. Compute them with TheWorld.encode_world."
            )
        patch = size // grid
        num_images = world_latents.shape[0]
        # (n, z, g, p, g, p) -> (n, g, g, z, p, p) -> (n, g*g, z*p*p): one flattened latent patch per world token.
        patches = world_latents.reshape(num_images, z_dim, grid, patch, grid, patch).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(num_images, grid * grid, z_dim * patch * patch)
        projector_dtype = self.world_projector.layers[0].weight.dtype
        return self.world_projector(patches.to(projector_dtype)) + self.world_position_embeddings

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        world_pixel_values: torch.Tensor | None = None,
        world_latents: torch.Tensor | None = None,
        ablate_world: bool = False,
    ) -> torch.Tensor:
        """Input embeddings (batch, seq, hidden) with image features and world tokens in their placeholders."""
        inputs_embeds = self.gemma.get_input_embeddings()(input_ids)
        dtype = inputs_embeds.dtype
        if pixel_values is not None:
            image_features = self.gemma.model.get_image_features(pixel_values, return_dict=True).pooler_output
            image_mask = self.gemma.model.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_features.to(inputs_embeds.device, dtype))

        world_mask = input_ids == self.config.world_token_id  # (batch, seq)
        num_placeholders = int(world_mask.sum())
        has_world_inputs = world_latents is not None or world_pixel_values is not None
        if num_placeholders or has_world_inputs:
            if not has_world_inputs:
                raise ValueError(
                    f"input_ids hold {num_placeholders} {WORLD_TOKEN} placeholders but neither world_pixel_values nor "
                    "world_latents were given; pass what TheWorldProcessor returns."
                )
            if world_latents is None:
                world_latents = self.encode_world(world_pixel_values)
            world_embeds = self.project_world(world_latents.to(inputs_embeds.device))  # (n, N, hidden)
            if world_embeds.shape[0] * world_embeds.shape[1] != num_placeholders:
                raise ValueError(
                    f"input_ids hold {num_placeholders} {WORLD_TOKEN} placeholders, but {world_embeds.shape[0]} "
                    f"world images give {world_embeds.shape[0] * world_embeds.shape[1]} world tokens "
                    f"({self.config.num_world_tokens} each). Prepare text and images together with TheWorldProcessor "
                    f"(configured for {self.config.num_world_tokens} world tokens per image)."
                )
            if ablate_world:
                world_embeds = torch.zeros_like(world_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(world_mask.unsqueeze(-1), world_embeds.to(dtype))

        for index, token_id in enumerate((self.config.world_start_token_id, self.config.world_end_token_id)):
            boundary_mask = (input_ids == token_id).unsqueeze(-1)
            inputs_embeds = torch.where(boundary_mask, self.world_boundary_embeddings[index].to(dtype), inputs_embeds)
        return inputs_embeds

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        world_pixel_values: torch.Tensor | None = None,
        world_latents: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        ablate_world: bool = False,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        world_pixel_values (`torch.Tensor` of shape `(num_images, 3, world_image_size, world_image_size)`):
            The world view of each image, in [-1, 1], in the order the images appear in the batch.
        world_latents (`torch.Tensor` of shape `(num_images, z_dim, latent_size, latent_size)`):
            Precomputed normalised VAE latents (see `encode_world`), instead of `world_pixel_values`.
        labels (`torch.LongTensor` of shape `(batch, seq)`):
            Next-token targets; positions holding -100 carry no loss.
        ablate_world (`bool`):
            Zero the world tokens (the placeholders stay), to measure what the world path contributes.
        """
        if (
            self.config.enable_world
            and position_ids is None
            and attention_mask is not None
            and attention_mask.ndim == 2
            and (past_key_values is None or past_key_values.get_seq_length() == 0)
        ):
            # Positions count real tokens only, so a left-padded row sees the positions it would see alone. Without the
            # world path, Gemma 3 picks its own positions, so its logits stay bit-identical.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

        shared = dict(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            token_type_ids=token_type_ids,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        if self.config.enable_world:
            if inputs_embeds is None:
                inputs_embeds = self.embed_inputs(
                    input_ids, pixel_values, world_pixel_values, world_latents, ablate_world
                )
            outputs = self.gemma(inputs_embeds=inputs_embeds, **shared)
        else:
            if input_ids is not None and bool((input_ids == self.config.world_token_id).any()):
                raise ValueError(
                    "input_ids hold world placeholders but enable_world=False; prepare inputs with "
                    "TheWorldProcessor(..., enable_world=False) or load the model with enable_world=True."
                )
            outputs = self.gemma(input_ids=input_ids, pixel_values=pixel_values, inputs_embeds=inputs_embeds, **shared)

        loss = None
        if labels is not None:
            vocab_size = self.config.get_text_config().vocab_size
            loss = ForCausalLMLoss(logits=outputs.logits, labels=labels, vocab_size=vocab_size)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=outputs.logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(self, input_ids, use_cache=True, is_first_iteration=False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, use_cache=use_cache, is_first_iteration=is_first_iteration, **kwargs
        )
        if is_first_iteration or not use_cache:
            model_inputs["token_type_ids"] = kwargs.get("token_type_ids")
        else:
            # World tokens are computed once, at prefill; later steps read them from the KV cache.
            model_inputs["token_type_ids"] = None
            for name in ("world_pixel_values", "world_latents"):
                model_inputs.pop(name, None)
        return model_inputs

    create_masks_for_generate = staticmethod(Gemma3ForConditionalGeneration.create_masks_for_generate)

    # ------------------------------------------------------------------ building, saving, loading

    @classmethod
    def from_bases(
        cls,
        gemma_model_name_or_path: str = "google/gemma-3-4b-it",
        cosmos_model_name_or_path: str = "nvidia/Cosmos-Predict2-2B-Video2World",
        *,
        gemma_revision: str | None = None,
        cosmos_revision: str | None = None,
        cosmos_subfolder: str = "vae",
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> "TheWorld":
        """A new, untrained TheWorld on two frozen bases (Hub ids or local paths), world projector freshly initialised.

        Remaining keyword arguments are `TheWorldConfig` fields (e.g. `world_grid_size=8`) or Hub arguments
        (`cache_dir`, `token`, `local_files_only`, ...).
        """
        hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
        config = TheWorldConfig(
            gemma_model_name_or_path=str(gemma_model_name_or_path),
            gemma_revision=pinned_revision(gemma_model_name_or_path, gemma_revision, **hub_kwargs),
            cosmos_model_name_or_path=str(cosmos_model_name_or_path),
            cosmos_subfolder=cosmos_subfolder,
            cosmos_revision=pinned_revision(cosmos_model_name_or_path, cosmos_revision, **hub_kwargs),
            **kwargs,
        )
        gemma, vae = load_bases(config, dtype=dtype, **hub_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(
            config.gemma_model_name_or_path, revision=config.gemma_revision, **hub_kwargs
        )
        token_ids = add_world_tokens(tokenizer)
        config.world_start_token_id = token_ids[WORLD_START_TOKEN]
        config.world_token_id = token_ids[WORLD_TOKEN]
        config.world_end_token_id = token_ids[WORLD_END_TOKEN]
        config.gemma_config = gemma.config
        config.vae_config = {key: value for key, value in vae.config.items() if not key.startswith("_")}
        config.validate()

        model = cls(config, gemma=gemma, vae=vae)
        with torch.no_grad():
            # <start_of_world>/<end_of_world> start from Gemma's own image boundary embeddings.
            boundary_ids = torch.tensor([gemma.config.boi_token_id, gemma.config.eoi_token_id], device=gemma.device)
            model.world_boundary_embeddings.copy_(gemma.get_input_embeddings()(boundary_ids).float())
        generation_config = copy.deepcopy(gemma.generation_config)
        generation_config.suppress_tokens = sorted(token_ids.values())
        model.generation_config = generation_config
        return model.eval()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        config: TheWorldConfig | None = None,
        revision: str | None = None,
        dtype: torch.dtype | str | None = None,
        **kwargs,
    ) -> "TheWorld":
        """Builds the frozen bases from their own repositories, then loads the small checkpoint into the trained part.

        Works on a local folder, a Hub id, or the offline Hub cache. Config fields given as keyword arguments
        (e.g. `enable_world=False`) override the saved ones. Only safetensors are ever read. The bases load at the
        commits the checkpoint pins; overriding a base to another commit warns, a base of another architecture fails.
        """
        if model_args:
            raise TypeError(f"TheWorld.from_pretrained takes no positional model arguments; got {model_args}.")
        dtype = kwargs.pop("torch_dtype", dtype)
        for ignored in ("trust_remote_code", "_from_auto", "adapter_kwargs", "code_revision", "subfolder"):
            kwargs.pop(ignored, None)
        hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
        if config is None:
            config, kwargs = TheWorldConfig.from_pretrained(
                pretrained_model_name_or_path, revision=revision, return_unused_kwargs=True, **hub_kwargs, **kwargs
            )
        else:
            config = copy.deepcopy(config)
            for key in [key for key in kwargs if hasattr(config, key)]:
                setattr(config, key, kwargs.pop(key))
        if kwargs:
            raise TypeError(f"Unexpected arguments for TheWorld.from_pretrained: {sorted(kwargs)}.")
        config.validate()

        weights_file = resolve_weights_file(pretrained_model_name_or_path, revision=revision, **hub_kwargs)
        saved, _ = TheWorldConfig.get_config_dict(pretrained_model_name_or_path, revision=revision, **hub_kwargs)
        warn_on_unpinned_bases(saved, config, **hub_kwargs)
        gemma, vae = load_bases(config, dtype=dtype, **hub_kwargs)
        check_bases_match(config, gemma, vae)
        model = cls(config, gemma=gemma, vae=vae)
        if config.lora_config is not None:
            model.add_language_model_lora(config.lora_config)
        model.load_trainable_weights(load_state_dict(weights_file), source=str(pretrained_model_name_or_path))
        try:
            model.generation_config = GenerationConfig.from_pretrained(
                pretrained_model_name_or_path, revision=revision, **hub_kwargs
            )
        except OSError:
            model.generation_config = copy.deepcopy(gemma.generation_config)
        return model.eval()

    def add_language_model_lora(self, lora_config: dict[str, Any]) -> None:
        """Adds PEFT LoRA adapters to Gemma's language model (needs `peft`); they train and save with the projector."""
        try:  # peft stays an optional requirement: only LoRA checkpoints need it
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as error:
            raise ImportError("This checkpoint has LoRA adapters; install peft (`pip install peft`).") from error

        inject_adapter_in_model(LoraConfig(**lora_config), self.gemma.model.language_model)
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
    ) -> str:
        """`PreTrainedModel.push_to_hub`; README.md is TheWorld's own model card when `model_card_builder` is set."""
        commit = dict(
            commit_message=commit_message,
            commit_description=commit_description,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )
        tags = tags or []  # transformers' own push_to_hub iterates over them
        if self.model_card_builder is None:
            return super().push_to_hub(repo_id, private=private, max_shard_size=max_shard_size, tags=tags, **commit)
        repo_id = hf_api().create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            readme = self.model_card_builder(folder, repo_id=repo_id, tags=tags)
            Path(folder, "README.md").write_text(readme, encoding="utf-8")
            return self._upload_modified_files(folder, repo_id, files_timestamps={}, **commit)


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
    for base in BASES:
        name, revision = getattr(config, f"{base}_model_name_or_path"), getattr(config, f"{base}_revision")
        pinned_name, pinned = saved_config.get(f"{base}_model_name_or_path"), saved_config.get(f"{base}_revision")
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


def load_bases(
    config: TheWorldConfig, dtype: torch.dtype | str | None = None, **hub_kwargs
) -> tuple[Gemma3ForConditionalGeneration, AutoencoderKLWan]:
    """Loads the frozen Gemma 3 and the Cosmos VAE (alone, not the whole Cosmos pipeline) from their own repos."""
    gemma = Gemma3ForConditionalGeneration.from_pretrained(
        config.gemma_model_name_or_path, revision=config.gemma_revision, dtype=dtype, **hub_kwargs
    )
    vae_kwargs = {key: value for key, value in hub_kwargs.items() if key != "proxies"}
    vae = AutoencoderKLWan.from_pretrained(
        config.cosmos_model_name_or_path,
        subfolder=config.cosmos_subfolder,
        revision=config.cosmos_revision,
        torch_dtype=dtype if not isinstance(dtype, str) else getattr(torch, dtype),
        **vae_kwargs,
    )
    return gemma, vae


def check_bases_match(config: TheWorldConfig, gemma: Gemma3ForConditionalGeneration, vae: AutoencoderKLWan) -> None:
    """Refuses bases whose architecture differs from the one the checkpoint was trained on, naming both."""
    saved_text, loaded_text = config.get_text_config(), gemma.config.get_text_config()
    differences = [
        f"gemma {key}: checkpoint {getattr(saved_text, key)} vs base {getattr(loaded_text, key)}"
        for key in GEMMA_ARCHITECTURE_KEYS
        if getattr(saved_text, key) != getattr(loaded_text, key)
    ]
    differences += [
        f"vae {key}: checkpoint {config.vae_config.get(key)} vs base {vae.config.get(key)}"
        for key in VAE_ARCHITECTURE_KEYS
        if list(_as_list(config.vae_config.get(key))) != list(_as_list(vae.config.get(key)))
    ]
    if differences:
        raise ValueError(
            f"This checkpoint was trained on other bases than {config.gemma_model_name_or_path!r} and "
            f"{config.cosmos_model_name_or_path!r}: {'; '.join(differences)}. Load it with the bases named in its "
            "config.json."
        )


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def resolve_weights_file(pretrained_model_name_or_path: str | os.PathLike, revision: str | None, **hub_kwargs) -> str:
    """Path of the checkpoint's `model.safetensors`; pickled weights are refused, never unpickled."""
    weights_file = cached_file(
        pretrained_model_name_or_path,
        WEIGHTS_NAME,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        **hub_kwargs,
    )
    if weights_file is not None:
        return weights_file
    for pickled in PICKLED_WEIGHTS_NAMES:
        if cached_file(
            pretrained_model_name_or_path,
            pickled,
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
            **hub_kwargs,
        ):
            raise OSError(
                f"{pretrained_model_name_or_path} offers only pickled weights ({pickled}); TheWorld loads safetensors "
                f"only, because unpickling can run arbitrary code. Ask its author for a {WEIGHTS_NAME}."
            )
    raise OSError(
        f"{pretrained_model_name_or_path} has no {WEIGHTS_NAME}: the checkpoint is incomplete. Save it again with "
        "model.save_pretrained(...) or point at the folder that holds it."
    )


__all__ = ["TheWorld", "TheWorldProjector"]
