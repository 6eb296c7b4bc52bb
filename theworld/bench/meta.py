"""Real-scale figures without weights: Gemma 3 4B and the Cosmos-Predict2 VAE built on the `meta` device.

For each variant (the Gemma baseline with its `multi_modal_projector` trainable; TheWorld projector-only and with
LoRA adapters, at each world-token count) one training step of a batch of VSR questions runs on `meta` tensors: the
vision tower and the VAE encoder (frozen), the trainable projector(s), the language model with its loss, and the
backward pass. Nothing is allocated; shapes are real. From that pass:

- parameters and checkpoint bytes (`theworld.bench.scale.parameter_report`);
- an estimate of training memory in bf16 mixed precision with AdamW::

      frozen parameters x 2 bytes           (bf16 weights)
    + trainable parameters x 4              (fp32 weights; TheWorld keeps them fp32)
    + trainable parameters x 4              (fp32 gradients)
    + trainable parameters x 8              (AdamW's two fp32 moments)
    + activations                           (saved for backward)

  where activations are the bytes of the distinct tensors autograd saves for backward during the forward pass,
  recorded with `torch.autograd.graph.saved_tensors_hooks` (parameters and buffers excluded), with an attention
  kernel that keeps what flash / memory-efficient attention keeps (queries, keys, values, output, log-sum-exp; no
  L x L matrix). Not counted: temporaries of the backward pass (e.g. the gradient of the logits), the VAE's and the
  vision tower's forward temporaries (freed before the language model runs), allocator fragmentation, CUDA context;
- FLOPs of the step (`torch.utils.flop_counter.FlopCounterMode`), with and without the VAE encode, attention counted
  over the full L x L;
- bytes one decode step reads (bf16): the language model's weights and the KV cache of the prompt. Decoding one token
  at batch 1 is bound by memory bandwidth, so their ratio estimates the decode-time ratio.
"""

from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode
from transformers import AttentionInterface, Gemma3ForConditionalGeneration

from ..loading_theworld import lora_arguments
from ..modeling_theworld import TheWorld
from .presets import MetaPreset
from .scale import build_real_scale_model, parameter_report

ATTENTION = "theworld_meta_attention"
DTYPE = torch.bfloat16
aten = torch.ops.aten


def memory_efficient_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention whose saved tensors are those of a flash kernel; masks are ignored (they change no shape)."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    is_causal = getattr(module, "is_causal", True)
    output = aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout, is_causal, scale=scaling)[0]
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, memory_efficient_attention)


def _attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _attention_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


ATTENTION_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward_flops,
}


class SavedActivations(torch.autograd.graph.saved_tensors_hooks):
    """Bytes of the distinct storages autograd saves for backward while active, `excluded` tensors aside."""

    def __init__(self, excluded: list[torch.Tensor]):
        # Meta tensors have no data pointer; the storage's C++ handle tells storages apart (views share it).
        self.excluded = {tensor.untyped_storage()._cdata for tensor in excluded}
        self.storages: dict[int, int] = {}
        super().__init__(self.pack, lambda tensor: tensor)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in self.excluded:
            self.storages[storage._cdata] = storage.nbytes()
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def training_pass(
    gemma: Gemma3ForConditionalGeneration, world: TheWorld | None, preset: MetaPreset, batch_size: int
) -> dict[str, int]:
    """Saved activations and FLOPs of one training step; for TheWorld also the FLOPs of the VAE encode."""
    model = world if world is not None else gemma
    gemma.set_attn_implementation(ATTENTION)
    vision = gemma.config.vision_config
    with torch.device("meta"):
        pixel_values = torch.empty(batch_size, 3, vision.image_size, vision.image_size, dtype=DTYPE)
        text_ids = torch.zeros(batch_size, preset.text_tokens, dtype=torch.long)
        world_pixels = None if world is None else torch.empty(batch_size, 3, *[world.config.world_image_size] * 2)
    counter = FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS)
    saved = SavedActivations([*model.parameters(), *model.buffers()])
    vae_flops = 0
    with counter, saved:
        pieces = [gemma.get_input_embeddings()(text_ids)]
        pieces.append(gemma.get_image_features(pixel_values, return_dict=True).pooler_output)
        if world is not None:
            before_vae = counter.get_total_flops()
            latents = world.encode_world(world_pixels)
            vae_flops = counter.get_total_flops() - before_vae
            boundaries = world.world_boundary_embeddings.expand(batch_size, 2, -1)
            pieces += [world.project_world(latents), boundaries]
        inputs_embeds = torch.cat([piece.to(DTYPE) for piece in pieces], dim=1)
        with torch.device("meta"):
            labels = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long)
        gemma(inputs_embeds=inputs_embeds, labels=labels).loss.backward()
    return {
        "activation_bytes": saved.bytes,
        "step_flops": counter.get_total_flops() - vae_flops,
        "vae_flops": vae_flops,
    }


def memory_estimate(total: int, trainable: int, activation_bytes: int, preset: MetaPreset) -> dict[str, int]:
    """The estimate of the module docstring, term by term (bytes)."""
    terms = {
        "frozen_weights": (total - trainable) * preset.frozen_bytes_per_parameter,
        "trainable_weights": trainable * 4,
        "gradients": trainable * 4,
        "adam_states": trainable * 8,
        "activations": activation_bytes,
    }
    return {**terms, "total": sum(terms.values())}


def decode_bytes(gemma: Gemma3ForConditionalGeneration, context: int) -> dict[str, int]:
    """What one memory-bound decode step reads: the language model's weights (the tied embedding doubles as the LM
    head) and the KV cache of `context` positions (a sliding-window layer keeps at most its window)."""
    text = gemma.config.get_text_config()
    language_model = gemma.model.language_model
    weights = sum(parameter.numel() * parameter.element_size() for parameter in language_model.parameters())
    bytes_per_position = 2 * text.num_key_value_heads * text.head_dim * torch.finfo(DTYPE).bits // 8
    positions = sum(
        min(context, text.sliding_window) if layer_type == "sliding_attention" else context
        for layer_type in text.layer_types
    )
    return {
        "weights": weights,
        "kv_cache": bytes_per_position * positions,
        "total": weights + bytes_per_position * positions,
    }


def measure_variant(
    gemma: Gemma3ForConditionalGeneration, world: TheWorld | None, preset: MetaPreset
) -> dict[str, Any]:
    """Parameter counts, and per batch size the training pass and the memory estimate."""
    model = world if world is not None else gemma
    total = sum(parameter.numel() for parameter in model.parameters())
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    batches = {}
    for batch_size in preset.batch_sizes:
        measured = training_pass(gemma, world, preset, batch_size)
        memory = memory_estimate(total, trainable, measured.pop("activation_bytes"), preset)
        batches[str(batch_size)] = {**measured, "memory": memory}
    world_tokens = world.config.num_world_tokens if world is not None else 0
    # Text, image tokens, and each image's world tokens between <start_of_world> and <end_of_world>.
    sequence_length = preset.text_tokens + gemma.config.mm_tokens_per_image + (world_tokens + 2 if world_tokens else 0)
    return {
        "world_tokens": world_tokens,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "sequence_length": sequence_length,
        "decode_bytes_per_token": decode_bytes(gemma, sequence_length),
        "batches": batches,
    }


def gemma_variant(preset: MetaPreset) -> dict[str, Any]:
    """The baseline: Gemma 3 4B with only its `multi_modal_projector` trainable."""
    gemma = build_real_scale_model().gemma.to(DTYPE)
    for name, parameter in gemma.named_parameters():
        parameter.requires_grad_(name.startswith("model.multi_modal_projector."))
    return measure_variant(gemma, None, preset)


def world_variant(preset: MetaPreset, grid_size: int, lora_rank: int) -> dict[str, Any]:
    """TheWorld at real scale with `grid_size**2` world tokens, projector-only or with LoRA adapters of `lora_rank`."""
    with torch.device("meta"):
        world = build_real_scale_model(grid_size)
        if lora_rank:
            world.add_language_model_lora(lora_arguments(lora_rank, target_modules=preset.lora_target_modules))
    # The checkpoint holds the trainable weights in fp32, as TheWorld keeps them.
    report = parameter_report(world)
    variant = measure_variant(world.gemma, world.to(DTYPE), preset)
    return {
        **variant,
        "lora_rank": lora_rank,
        "checkpoint_bytes": report["checkpoint_bytes"],
        "checkpoint_overhead_bytes": report["checkpoint_bytes"] - 4 * report["trainable_parameters"],
    }


def meta_figures(preset: MetaPreset) -> dict[str, Any]:
    """Every variant of the preset, with ratios to the Gemma baseline at each batch size."""
    gemma = gemma_variant(preset)
    variants = {"gemma": gemma}
    for grid_size in preset.world_grid_sizes:
        for lora_rank in (0, preset.lora_rank):
            name = f"theworld-{grid_size**2}" + (f"-lora{lora_rank}" if lora_rank else "")
            variants[name] = world_variant(preset, grid_size, lora_rank)
    for variant in variants.values():
        variant["floor"] = variant["sequence_length"] / gemma["sequence_length"]
        decode = variant["decode_bytes_per_token"]["total"]
        variant["decode_ratio"] = decode / gemma["decode_bytes_per_token"]["total"]
        for size, batch in variant["batches"].items():
            baseline = gemma["batches"][size]
            batch["memory_ratio"] = batch["memory"]["total"] / baseline["memory"]["total"]
            batch["flops_ratio"] = batch["step_flops"] / baseline["step_flops"]
            batch["flops_ratio_with_vae"] = (batch["step_flops"] + batch["vae_flops"]) / baseline["step_flops"]
    return {
        "text_tokens": preset.text_tokens,
        "default_variant": f"theworld-{preset.world_grid_sizes[0] ** 2}",
        "variants": variants,
    }
