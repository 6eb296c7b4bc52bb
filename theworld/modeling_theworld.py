"""TheWorld: Gemma 3 that also sees a world model's latent view of each image.

A frozen world encoder (by default the VAE of NVIDIA Cosmos-Predict2; see `encoders_theworld.py`) encodes each image
into a latent grid; a small trainable projector turns that grid into world tokens, which are scattered into the
`<world_soft_token>` placeholders that `TheWorldProcessor` puts in the text.
Everything else is the frozen Gemma 3, so generation, the KV cache, padding and batching work exactly as in Gemma 3.
"""

import copy
import inspect
from typing import Any

import torch
from torch import nn
from transformers import Cache, Gemma3ForConditionalGeneration, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_theworld import WORLD_TOKEN, TheWorldConfig
from .encoders_theworld import world_encoder_class
from .loading_theworld import TheWorldPreTrainedModel

# The name under which the KV cache goes into and comes out of Gemma 3: transformers 5.24 renamed `past_key_values` to
# `cache` (the old name goes away in 5.40). Decided here, once, from the installed transformers.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
# transformers 5.24 renamed gradient checkpointing to activation checkpointing (the old names go away in 6).
ENABLE_ACTIVATION_CHECKPOINTING = (
    "activation_checkpointing_enable"
    if hasattr(PreTrainedModel, "activation_checkpointing_enable")
    else "gradient_checkpointing_enable"
)


class TheWorldProjector(nn.Module):
    """Maps each flattened latent patch on its own to Gemma's embedding space: (n, N, token_dim) -> (n, N, hidden)."""

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


class TheWorldGridTransformer(nn.Module):
    """Maps latent patches to Gemma's embedding space through self-attention across the whole grid, so each world
    token can carry what lies elsewhere in the image (where one object is relative to another, say):
    (n, N, token_dim) -> (n, N, hidden)."""

    width = 256
    num_layers = 2
    num_heads = 4

    def __init__(self, config: TheWorldConfig):
        super().__init__()
        self.patch_embedding = nn.Linear(config.world_token_dim, self.width)
        # Where each patch lies in the grid: self-attention alone does not know.
        self.grid_position_embeddings = nn.Parameter(torch.zeros(config.num_world_tokens, self.width))
        layer = nn.TransformerEncoderLayer(
            self.width,
            self.num_heads,
            4 * self.width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, self.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(self.width)
        self.output = nn.Linear(self.width, config.get_text_config().hidden_size)

    def forward(self, world_patches: torch.Tensor) -> torch.Tensor:
        hidden_states = self.patch_embedding(world_patches) + self.grid_position_embeddings  # (n, N, width)
        return self.output(self.norm(self.encoder(hidden_states)))


PROJECTOR_CLASSES: dict[str, type[nn.Module]] = {
    "linear": TheWorldProjector,
    "mlp": TheWorldProjector,
    "transformer": TheWorldGridTransformer,
}


class TheWorld(TheWorldPreTrainedModel, GenerationMixin):
    """Gemma 3 (frozen) + world encoder (frozen) + trainable world projector and world boundary embeddings."""

    accepts_loss_kwargs = False

    def __init__(
        self,
        config: TheWorldConfig,
        gemma: Gemma3ForConditionalGeneration | None = None,
        world_encoder: nn.Module | None = None,
    ):
        super().__init__(config)
        if config.world_encoder_config is None:
            raise ValueError(
                "TheWorldConfig.world_encoder_config is None; build a new model with TheWorld.from_bases(...)."
            )
        self.gemma = gemma if gemma is not None else Gemma3ForConditionalGeneration(config.gemma_config)
        config.gemma_config = self.gemma.config
        if world_encoder is None:
            encoder_class = world_encoder_class(config.world_encoder_type, config.world_encoder_plugin)
            world_encoder = encoder_class.from_config(config.world_encoder_config)
        self.world_encoder = world_encoder
        self.world_projector = PROJECTOR_CLASSES[config.projector_type](config)
        hidden_size = config.get_text_config().hidden_size
        # Where each world token's latent patch lies in the image, so attention that finds an object by content also
        # reads its position (RoPE only relates positions inside attention scores, not in what is read).
        self.world_position_embeddings = nn.Parameter(torch.zeros(config.num_world_tokens, hidden_size))
        # Embeddings of <start_of_world> and <end_of_world>, already in Gemma's scaled embedding space.
        self.world_boundary_embeddings = nn.Parameter(torch.zeros(2, hidden_size))
        self.post_init()
        self.apply_freezing()
        self.generation_config = self.with_world_tokens_suppressed(self.generation_config)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The bases come with their own weights: only TheWorld's own parts are initialised here.
        std = self.config.get_text_config().initializer_range
        if module is self.world_projector:
            for part in module.modules():
                if isinstance(part, nn.Linear):
                    part.weight.normal_(mean=0.0, std=std)
                    part.bias.zero_()
                elif isinstance(part, nn.LayerNorm):
                    part.weight.fill_(1.0)
                    part.bias.zero_()
                elif isinstance(part, nn.MultiheadAttention):
                    part.in_proj_weight.normal_(mean=0.0, std=std)
                    part.in_proj_bias.zero_()
            if isinstance(module, TheWorldGridTransformer):
                module.grid_position_embeddings.normal_(mean=0.0, std=std)
        elif isinstance(module, TheWorld):
            module.world_boundary_embeddings.normal_(mean=0.0, std=std)
            module.world_position_embeddings.normal_(mean=0.0, std=std)
        elif module is self.world_encoder and hasattr(module, "init_buffers"):
            # Its constants are not saved: restored here when the model was built on the meta device.
            module.init_buffers()

    def with_world_tokens_suppressed(self, generation_config: GenerationConfig) -> GenerationConfig:
        """A copy of `generation_config` that never generates the world tokens (they only stand for images)."""
        generation_config = copy.deepcopy(generation_config)
        world_ids = {self.config.world_start_token_id, self.config.world_token_id, self.config.world_end_token_id}
        if None not in world_ids:
            generation_config.suppress_tokens = sorted(set(generation_config.suppress_tokens or []) | world_ids)
        return generation_config

    # ------------------------------------------------------------------ trainable part

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
        """The world encoder's normalised latent grid: (n, 3, S, S) in [-1, 1] -> (n, channels, frames, h, w)."""
        size = self.config.world_image_size
        if world_pixel_values.ndim != 4 or tuple(world_pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(
                f"world_pixel_values must have shape (num_images, 3, {size}, {size}) with values in [-1, 1]; got "
                f"{tuple(world_pixel_values.shape)}. Prepare them with TheWorldProcessor."
            )
        return self.world_encoder(world_pixel_values).float()

    def project_world(self, world_latents: torch.Tensor) -> torch.Tensor:
        """World tokens from a normalised latent grid: (n, channels, frames, h, w) -> (n, num_world_tokens, hidden).

        A grid of one frame may also come without its frames axis, (n, channels, h, w).
        """
        channels, frames, size, _ = shape = self.config.world_latent_shape
        if world_latents.ndim == 4 and frames == 1:
            world_latents = world_latents.unsqueeze(2)
        if world_latents.ndim != 5 or tuple(world_latents.shape[1:]) != shape:
            raise ValueError(
                f"world_latents must have shape (num_images, {channels}, {frames}, {size}, {size}); got "
                f"{tuple(world_latents.shape)}. Compute them with TheWorld.encode_world."
            )
        grid = self.config.world_grid_size
        patch = size // grid
        num_images = world_latents.shape[0]
        # (n, c, f, g, p, g, p) -> (n, g, g, c, f, p, p) -> (n, g*g, c*f*p*p): one flattened patch per world token.
        patches = world_latents.reshape(num_images, channels, frames, grid, patch, grid, patch)
        patches = patches.permute(0, 3, 5, 1, 2, 4, 6).reshape(num_images, grid * grid, self.config.world_token_dim)
        projector_dtype = next(self.world_projector.parameters()).dtype
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
        world_latents (`torch.Tensor` of shape `(num_images, channels, frames, latent_size, latent_size)`):
            The world encoder's precomputed latent grids (see `encode_world`), instead of `world_pixel_values`.
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
        kept = logits_to_keep
        if isinstance(kept, int) and kept > 0:
            # The last positions by index: sliced out of a longer batch they are a strided view, which the output
            # layer's matmul meets by copying its (vocab, hidden) weight once per row (seconds in bf16 on CPU).
            tokens = input_ids if input_ids is not None else inputs_embeds
            kept = torch.arange(max(tokens.shape[1] - kept, 0), tokens.shape[1], device=tokens.device)
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
            logits_to_keep=kept,
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
                "(TheWorld.from_bases(<its folder or Hub id>, <the same world encoder>)); its drafts are checked by "
                "this model, so the output stays exactly this model's."
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


__all__ = ["TheWorld", "TheWorldProjector"]
