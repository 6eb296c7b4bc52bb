"""TheWorld: Gemma 3 that also sees a Cosmos world model's latent view of each image.

The frozen Cosmos VAE encodes each image into a latent grid; a small trainable projector turns that grid into world
tokens, which are scattered into the `<world_soft_token>` placeholders that `TheWorldProcessor` puts in the text.
Everything else is the frozen Gemma 3, so generation, the KV cache, padding and batching work exactly as in Gemma 3.
"""

import copy
import inspect
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import AutoencoderKLWan
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME as VAE_WEIGHTS_NAME
from safetensors import safe_open
from torch import nn
from transformers import (
    AutoTokenizer,
    Cache,
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

from .configuration_theworld import (
    MINIMUM_VERSIONS,
    WORLD_END_TOKEN,
    WORLD_START_TOKEN,
    WORLD_TOKEN,
    TheWorldConfig,
    add_world_tokens,
)

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
# The name under which the KV cache goes into and comes out of Gemma 3: transformers 5.24 renamed `past_key_values` to
# `cache` (the old name goes away in 5.40). Decided here, once, from the installed transformers.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
# transformers 5.24 renamed gradient checkpointing to activation checkpointing (the old names go away in 6).
ENABLE_ACTIVATION_CHECKPOINTING = (
    "activation_checkpointing_enable"
    if hasattr(PreTrainedModel, "activation_checkpointing_enable")
    else "gradient_checkpointing_enable"
)
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
# safetensors dtype names of floating-point weights.
SAFETENSORS_FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}

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
    base_model_prefix = "gemma"
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
        self.generation_config = self.with_world_tokens_suppressed(self.generation_config)

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
            # Not saved (they come from the VAE's config): restored here when the model was built on the meta device.
            vae_config = self.config.vae_config
            module.latents_mean.copy_(torch.tensor(vae_config["latents_mean"]).view_as(module.latents_mean))
            module.latents_std.copy_(torch.tensor(vae_config["latents_std"]).view_as(module.latents_std))

    def with_world_tokens_suppressed(self, generation_config: GenerationConfig) -> GenerationConfig:
        """A copy of `generation_config` that never generates the world tokens (they only stand for images)."""
        generation_config = copy.deepcopy(generation_config)
        world_ids = {self.config.world_start_token_id, self.config.world_token_id, self.config.world_end_token_id}
        if None not in world_ids:
            generation_config.suppress_tokens = sorted(set(generation_config.suppress_tokens or []) | world_ids)
        return generation_config

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

    def enable_activation_checkpointing(self) -> None:
        """Recomputes Gemma's activations in the backward pass instead of keeping them: less memory, one more forward
        pass per step (transformers' `activation_checkpointing_enable`, `gradient_checkpointing_enable` before 5.24).
        """
        getattr(self, ENABLE_ACTIVATION_CHECKPOINTING)()

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
        cache: Cache | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor | None = None,
        ablate_world: bool = False,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        r"""
        world_pixel_values (`torch.Tensor` of shape `(num_images, 3, world_image_size, world_image_size)`):
            The world view of each image, in [-1, 1], in the order the images appear in the batch.
        world_latents (`torch.Tensor` of shape `(num_images, z_dim, latent_size, latent_size)`):
            Precomputed normalised VAE latents (see `encode_world`), instead of `world_pixel_values`.
        cache (`Cache`, *optional*):
            The KV cache of earlier steps (`past_key_values` is its name before transformers 5.24; both are taken).
        labels (`torch.LongTensor` of shape `(batch, seq)`):
            Next-token targets; positions holding -100 carry no loss.
        logits_to_keep (`int` or `torch.Tensor`, *optional*):
            As in Gemma 3: the last `n` positions (0: all), or the positions to keep. By default all without `labels`
            and, with `labels`, only the positions that predict a label (`logits` is then `(batch, len(kept), vocab)`):
            Gemma 3's output layer has 262k rows, and full logits cost more than the rest of a training step.
        ablate_world (`bool`):
            Zero the world tokens (the placeholders stay), to measure what the world path contributes.
        """
        cache = cache if cache is not None else past_key_values
        if logits_to_keep is None:
            # Position t predicts token t + 1: keep the positions whose next token carries a label in some row.
            labelled = (labels[:, 1:] != -100).any(0).nonzero().flatten() if labels is not None else None
            logits_to_keep = labelled if labelled is not None else 0
        if (
            self.config.enable_world
            and position_ids is None
            and attention_mask is not None
            and attention_mask.ndim == 2
            and (cache is None or cache.get_seq_length() == 0)
        ):
            # Positions count real tokens only, so a left-padded row sees the positions it would see alone. Without the
            # world path, Gemma 3 picks its own positions, so its logits stay bit-identical.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

        shared = dict(
            attention_mask=attention_mask,
            position_ids=position_ids,
            token_type_ids=token_type_ids,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **{CACHE_NAME: cache},
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
            if isinstance(logits_to_keep, torch.Tensor):  # the kept positions' targets, already shifted
                targets = labels[:, logits_to_keep.to(labels.device) + 1]
                loss = ForCausalLMLoss(logits=outputs.logits, labels=None, shift_labels=targets, vocab_size=vocab_size)
            else:
                loss = ForCausalLMLoss(logits=outputs.logits, labels=labels, vocab_size=vocab_size)
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=outputs.logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
        )
        return output if (return_dict if return_dict is not None else self.config.return_dict) else output.to_tuple()

    def generate(self, *args, assistant_model: PreTrainedModel | None = None, **kwargs):
        """`GenerationMixin.generate`; an assistant model for assisted decoding must take world inputs too."""
        takes_world = (
            assistant_model is None or "world_pixel_values" in inspect.signature(assistant_model.forward).parameters
        )
        if not takes_world and any(kwargs.get(name) is not None for name in ("world_pixel_values", "world_latents")):
            raise ValueError(
                f"assistant_model is a {type(assistant_model).__name__}, which cannot take world inputs: generate "
                "hands every input of the main model to the assistant. Wrap the assistant's Gemma 3 as a TheWorld "
                "(TheWorld.from_bases(<its folder or Hub id>, <the Cosmos base>)); its drafts are checked by this "
                "model, so the output stays exactly this model's."
            )
        return super().generate(*args, assistant_model=assistant_model, **kwargs)

    def per_image_inputs(self) -> dict[str, int]:
        """Inputs that hold a row per image rather than per prompt, with the token that opens each image's
        placeholders in `input_ids`: `<start_of_image>` for Gemma's own view, `<start_of_world>` for the world view."""
        world_start = self.config.world_start_token_id
        boi = self.config.gemma_config.boi_token_id
        return {"pixel_values": boi, "world_pixel_values": world_start, "world_latents": world_start}

    def prepare_inputs_for_generation(
        self, input_ids, use_cache=True, is_first_iteration=False, inputs_embeds=None, **kwargs
    ) -> dict[str, Any]:
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            use_cache=use_cache,
            is_first_iteration=is_first_iteration,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        # Gemma 3's bidirectional attention over image tokens applies at prefill only.
        model_inputs["token_type_ids"] = kwargs.get("token_type_ids") if is_first_iteration or not use_cache else None
        # Each step gets the images whose placeholders it feeds: all of them at prefill (or in every step without a
        # cache, or of an assistant model), the new ones when continuing from a returned cache, none when decoding.
        step_ids = model_inputs.get("input_ids")
        for name, opening_token_id in self.per_image_inputs().items():
            per_image = kwargs.get(name)
            if per_image is not None and step_ids is not None:
                model_inputs[name] = images_in_step(per_image, input_ids, step_ids, opening_token_id)
            else:
                model_inputs[name] = None
        return model_inputs

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple[torch.LongTensor | None, dict[str, Any]]:
        # GenerationMixin's hook for beam search and num_return_sequences: it repeats every tensor row by row, which
        # would pair prompts with the wrong images when prompts hold different numbers of them. Per-image inputs are
        # repeated prompt by prompt instead, each prompt's images as one block.
        expanded = {}
        if expand_size > 1 and input_ids is not None:
            for name, opening_token_id in self.per_image_inputs().items():
                if kwargs.get(name) is not None:
                    images_per_prompt = (input_ids == opening_token_id).sum(-1).tolist()
                    blocks = kwargs.pop(name).split(images_per_prompt)
                    expanded[name] = torch.cat([block for block in blocks for _ in range(expand_size)])
        input_ids, kwargs = super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **kwargs)
        return input_ids, {**kwargs, **expanded}

    create_masks_for_generate = staticmethod(Gemma3ForConditionalGeneration.create_masks_for_generate)

    # ------------------------------------------------------------------ building, saving, loading

    @classmethod
    def from_bases(
        cls,
        gemma_model_name_or_path: str | os.PathLike = "google/gemma-3-4b-it",
        cosmos_model_name_or_path: str | os.PathLike = "nvidia/Cosmos-Predict2-2B-Video2World",
        *,
        gemma_revision: str | None = None,
        cosmos_revision: str | None = None,
        cosmos_subfolder: str = "vae",
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        **kwargs,
    ) -> "TheWorld":
        """A new, untrained TheWorld on two frozen bases (Hub ids or local folders), its world projector initialised.

        A local folder is recorded as its absolute path, so the checkpoint loads from any working directory. `dtype`,
        `attn_implementation`, `device_map` and `quantization_config` mean what they mean for `from_pretrained`.
        Remaining keyword arguments are `TheWorldConfig` fields (e.g. `world_grid_size=8`) or Hub arguments
        (`cache_dir`, `token`, `local_files_only`, ...).
        """
        hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
        gemma_kwargs = {key: kwargs.pop(key) for key in GEMMA_LOADING_KWARGS if key in kwargs}
        gemma_device_map, vae_device = split_device_map(kwargs.pop("device_map", None))
        config = TheWorldConfig(
            gemma_model_name_or_path=base_location(gemma_model_name_or_path),
            gemma_revision=pinned_revision(gemma_model_name_or_path, gemma_revision, **hub_kwargs),
            cosmos_model_name_or_path=base_location(cosmos_model_name_or_path),
            cosmos_subfolder=cosmos_subfolder,
            cosmos_revision=pinned_revision(cosmos_model_name_or_path, cosmos_revision, **hub_kwargs),
            **kwargs,
        )
        config._attn_implementation = attn_implementation
        gemma, vae = load_bases(config, dtype=dtype, device_map=gemma_device_map, **gemma_kwargs, **hub_kwargs)
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
        model.place_world_parts(vae_device)
        with torch.no_grad():
            # <start_of_world>/<end_of_world> start from Gemma's own image boundary embeddings.
            embeddings = gemma.get_input_embeddings()
            boundary_ids = [gemma.config.boi_token_id, gemma.config.eoi_token_id]
            boundary_embeddings = embeddings(torch.tensor(boundary_ids, device=embeddings.weight.device))
            model.world_boundary_embeddings.copy_(boundary_embeddings.float())
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
    ) -> "TheWorld":
        """Builds the frozen bases from their own repositories, then loads the small checkpoint into the trained part.

        Works on a local folder, a Hub id, or the offline Hub cache. The arguments of `PreTrainedModel.from_pretrained`
        mean the same here: `dtype` (`"auto"`: each base in the dtype its weights are stored in; the trained part is
        always float32), `device_map` (`"auto"`, a device, or a dict over TheWorld's modules: keys under `gemma` go to
        the Gemma 3 load, `vae` places the VAE; the trained part goes with Gemma's input embeddings), `max_memory`,
        `attn_implementation`, `quantization_config` (the frozen Gemma 3 only), `subfolder`, `revision`, `cache_dir`,
        `token`, `local_files_only`. Config fields given as keyword arguments (e.g. `enable_world=False`) override the
        saved ones. Only safetensors are ever read. The bases load at the commits the checkpoint pins; overriding a
        base to another commit warns, a base of another architecture fails.
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
        gemma_device_map, vae_device = split_device_map(kwargs.pop("device_map", None))
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
        gemma, vae = load_bases(config, dtype=dtype, device_map=gemma_device_map, **gemma_kwargs, **hub_kwargs)
        check_bases_match(config, gemma, vae)
        model = cls(config, gemma=gemma, vae=vae)
        if config.lora_config is not None:
            model.add_language_model_lora(config.lora_config)
        model.load_trainable_weights(load_state_dict(weights_file), source=str(pretrained_model_name_or_path))
        model.place_world_parts(vae_device)
        try:
            generation_config = generation_config or GenerationConfig.from_pretrained(
                pretrained_model_name_or_path, **checkpoint_kwargs
            )
        except OSError:
            generation_config = gemma.generation_config
        model.generation_config = model.with_world_tokens_suppressed(generation_config)
        return model.eval()

    def place_world_parts(self, vae_device: torch.device | str | int | None = None) -> None:
        """Puts the trained part beside Gemma's input embeddings (wherever a `device_map` put them) and the VAE on
        `vae_device` (default: the same device); records the placement in `hf_device_map` when Gemma has one."""
        embedding_device = self.gemma.get_input_embeddings().weight.device
        vae_device = embedding_device if vae_device is None else torch.device(vae_device)
        self.vae.to(vae_device)
        self.latents_mean, self.latents_std = self.latents_mean.to(vae_device), self.latents_std.to(vae_device)
        self.world_projector.to(embedding_device)
        for parameter in (self.world_position_embeddings, self.world_boundary_embeddings):
            parameter.data = parameter.data.to(embedding_device)
        gemma_device_map = getattr(self.gemma, "hf_device_map", None)
        if gemma_device_map is not None:
            world_parts = ("world_projector", "world_position_embeddings", "world_boundary_embeddings")
            self.hf_device_map = {
                **{f"gemma.{name}" if name else "gemma": device for name, device in gemma_device_map.items()},
                "vae": vae_device,
                **dict.fromkeys(world_parts, embedding_device),
            }

    def add_language_model_lora(self, lora_config: dict[str, Any]) -> None:
        """Adds PEFT LoRA adapters to Gemma's language model (needs `peft`); they train and save with the projector."""
        try:  # peft stays an optional requirement: only LoRA checkpoints need it
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as error:
            raise ImportError(
                f'This checkpoint has LoRA adapters; install peft (`pip install "peft>={MINIMUM_VERSIONS["peft"]}"`).'
            ) from error

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


def images_in_step(
    per_image: torch.Tensor, input_ids: torch.LongTensor, step_ids: torch.LongTensor, opening_token_id: int
) -> torch.Tensor | None:
    """The rows of `per_image` (one per image, prompt after prompt) whose placeholders a generation step feeds.

    `input_ids` is the whole sequence so far (batch, seq), `step_ids` its last tokens, which this step feeds; the
    images of a row that start in those tokens are its last ones. None when the step feeds no image.
    """
    images_per_row = (input_ids == opening_token_id).sum(-1)  # (batch,)
    images_in_step_per_row = (step_ids == opening_token_id).sum(-1)  # (batch,)
    if not int(images_in_step_per_row.sum()):
        return None
    ends = images_per_row.cumsum(0)
    counts = images_in_step_per_row.tolist()
    keep = [torch.arange(end - count, end) for end, count in zip(ends.tolist(), counts, strict=True)]
    return per_image[torch.cat(keep).to(per_image.device)]


def base_location(name_or_path: str | os.PathLike) -> str:
    """How a config records a base: a local folder as its absolute, resolved path; a Hub id as it is."""
    return str(Path(name_or_path).resolve()) if os.path.isdir(name_or_path) else str(name_or_path)


def is_local_path(location: str) -> bool:
    """Whether `location` can only be a local path: a Hub id is `name` or `namespace/name`."""
    return os.path.isabs(location) or location.startswith((".", "~")) or location.count("/") > 1 or "\\" in location


def check_base_locations(config: TheWorldConfig) -> None:
    """Refuses a base recorded as a local folder that is not there, naming the config field and the override."""
    for base in BASES:
        field = f"{base}_model_name_or_path"
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


def split_device_map(device_map: Any) -> tuple[Any, torch.device | str | int | None]:
    """(Gemma 3's `device_map`, the VAE's device) from a `device_map` over TheWorld.

    A device or a strategy (`"auto"`, `"cpu"`, `0`, ...) goes to the Gemma 3 load, and the VAE follows Gemma's input
    embeddings. A dict maps TheWorld's module names to devices: `"gemma"` or a module under it
    (`"gemma.model.language_model"`, ...) for the Gemma 3 load, `"vae"` for the VAE, `""` for everything else.
    """
    if not isinstance(device_map, dict):
        return device_map, None
    unknown = [key for key in device_map if key not in ("", "vae", "gemma") and not key.startswith("gemma.")]
    if unknown:
        raise ValueError(
            f"device_map keys {unknown} name no part of TheWorld a device can be chosen for: use '' (everything), "
            "'vae', 'gemma' or a module under it ('gemma.model.language_model', ...). The trained part always goes "
            "with Gemma's input embeddings."
        )
    gemma_map = {
        key.removeprefix("gemma").removeprefix("."): device
        for key, device in device_map.items()
        if key == "gemma" or key.startswith("gemma.")
    }
    if not gemma_map and "" in device_map:
        gemma_map = {"": device_map[""]}
    return gemma_map or None, device_map.get("vae", device_map.get(""))


def vae_dtype(config: TheWorldConfig, dtype: torch.dtype | str | None, **hub_kwargs) -> torch.dtype:
    """The dtype to load the VAE in: `dtype` itself or its name; for `"auto"` or None, the dtype its weights are
    stored in (diffusers itself would load them as float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype={dtype!r} is not a torch dtype; use e.g. torch.bfloat16, 'bfloat16' or 'auto'.")
        return getattr(torch, dtype)
    weights_file = cached_file(
        config.cosmos_model_name_or_path,
        VAE_WEIGHTS_NAME,
        subfolder=config.cosmos_subfolder,
        revision=config.cosmos_revision,
        _raise_exceptions_for_missing_entries=False,
        **hub_kwargs,
    )
    if weights_file is None:  # sharded or not safetensors: diffusers' own default
        return torch.float32
    with safe_open(weights_file, framework="pt") as weights:
        stored = [weights.get_slice(name).get_dtype() for name in weights.keys()]
    return next((SAFETENSORS_FLOAT_DTYPES[name] for name in stored if name in SAFETENSORS_FLOAT_DTYPES), torch.float32)


def load_bases(
    config: TheWorldConfig, dtype: torch.dtype | str | None = None, **kwargs
) -> tuple[Gemma3ForConditionalGeneration, AutoencoderKLWan]:
    """Loads the frozen Gemma 3 and the Cosmos VAE (alone, not the whole Cosmos pipeline) from their own repos.

    `kwargs` are Hub arguments (`HUB_KWARGS`, for both) and Gemma 3 loading arguments (`device_map` and
    `GEMMA_LOADING_KWARGS`, for Gemma only); Gemma's attention implementation is the config's.
    """
    hub_kwargs = {key: value for key, value in kwargs.items() if key in HUB_KWARGS}
    vae_torch_dtype = vae_dtype(config, dtype, **hub_kwargs)  # first: it also checks `dtype`
    gemma = Gemma3ForConditionalGeneration.from_pretrained(
        config.gemma_model_name_or_path,
        revision=config.gemma_revision,
        dtype="auto" if dtype is None else dtype,
        attn_implementation=config._attn_implementation,
        **kwargs,
    )
    vae = AutoencoderKLWan.from_pretrained(
        config.cosmos_model_name_or_path,
        subfolder=config.cosmos_subfolder,
        revision=config.cosmos_revision,
        torch_dtype=vae_torch_dtype,
        **{key: value for key, value in hub_kwargs.items() if key != "proxies"},
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
