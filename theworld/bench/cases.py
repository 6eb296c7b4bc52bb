"""The measured figures, each TheWorld against the Gemma 3 it wraps, both sides interleaved in one process.

1. training step (forward, backward, AdamW step): TheWorld with the VAE live, TheWorld on cached latents, and Gemma 3
   with only its own `multi_modal_projector` trainable, on the same images and prompts (without world tokens);
2. the same step over a sweep of world-token counts, against the floor (L + N) / L;
3. generation: time to the first token (prefill) and per-token decode, greedy with the KV cache;
4. loading a checkpoint with `AutoModel` against loading the two bases alone, and the checkpoint's size;
5. a training epoch on latents cached by the first epoch against an epoch that runs the VAE.
"""

import functools
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from torch.utils.data import DataLoader, Dataset
from transformers import AutoModel, Gemma3ForConditionalGeneration, Gemma3Processor
from transformers.generation.streamers import BaseStreamer

from ..data import VSRExample, load_image, load_vsr_split, synthesize_vsr
from ..loading_theworld import WEIGHTS_NAME
from ..modeling_theworld import TheWorld
from ..processing_theworld import TheWorldProcessor
from ..prompt import vsr_inputs
from ..testing.small_real_base import cached_small_real_base
from ..testing.tiny import TinyBases, make_tiny_bases
from ..training.collation import VSRCollator, VSRTrainingDataset, encode_vsr_example
from ..training.latent_cache import WorldLatentCache
from .harness import interleave, resident_bytes, round_robin, synchronize, timed, transient_peak_bytes
from .presets import MeasuredPreset

Batch = dict[str, torch.Tensor]


@dataclass
class Workbench:
    """What every figure shares: the preset, the random bases on disk, a synthetic VSR set and the Gemma baseline."""

    preset: MeasuredPreset
    device: torch.device
    directory: Path
    bases: TinyBases
    examples: list[VSRExample]
    gemma: Gemma3ForConditionalGeneration
    gemma_processor: Gemma3Processor
    gemma_optimizer: torch.optim.Optimizer


def build_workbench(preset: MeasuredPreset, directory: Path, device: torch.device) -> Workbench:
    """Writes the preset's random bases and data set under `directory` and loads the Gemma baseline."""
    bases = make_tiny_bases(
        directory / "bases",
        text_overrides=preset.text,
        vision_overrides=preset.vision,
        mm_tokens_per_image=preset.mm_tokens_per_image,
        vae_overrides=preset.vae,
    )
    if preset.small_real_gemma:
        bases = TinyBases(gemma=cached_small_real_base(), cosmos=bases.cosmos)
    n_train = max(preset.epoch_examples, preset.batch_size)
    synthesize_vsr(directory / "data", n_train=n_train + n_train % 2, n_dev=2, n_test=2, image_size=preset.image_size)
    examples = load_vsr_split(directory / "data" / "train.jsonl", directory / "data" / "images").examples
    gemma = Gemma3ForConditionalGeneration.from_pretrained(bases.gemma).to(device)
    # The baseline trains only its own image projector, as TheWorld trains only its world projector.
    for name, parameter in gemma.named_parameters():
        parameter.requires_grad_(name.startswith("model.multi_modal_projector."))
    return Workbench(
        preset=preset,
        device=device,
        directory=directory,
        bases=bases,
        examples=examples,
        gemma=gemma,
        gemma_processor=Gemma3Processor.from_pretrained(bases.gemma),
        gemma_optimizer=make_optimizer(gemma),
    )


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-4)


def load_world(bench: Workbench, grid_size: int | None = None) -> tuple[TheWorld, TheWorldProcessor]:
    """A new TheWorld on the bench's bases through `from_bases`; another grid size keeps the latent patch per token."""
    preset = bench.preset
    grid_size = grid_size or preset.world_grid_size
    pixels_per_token = preset.world_image_size // preset.world_grid_size
    model = TheWorld.from_bases(
        bench.bases.gemma,
        bench.bases.cosmos,
        world_image_size=pixels_per_token * grid_size,
        world_grid_size=grid_size,
    ).to(bench.device)
    return model, TheWorldProcessor.from_model_config(model.config)


def collate(processor: Gemma3Processor, examples: list[VSRExample], device: torch.device) -> Batch:
    """A training batch as the training loop builds it: prompt + answer, loss on the answer only."""
    batch = VSRCollator(processor.tokenizer.pad_token_id)([encode_vsr_example(processor, e) for e in examples])
    return {name: tensor.to(device) for name, tensor in batch.items()}


def with_cached_latents(model: TheWorld, batch: Batch) -> Batch:
    """The batch with its world pixels replaced by their (precomputed) VAE latents."""
    batch = dict(batch)
    batch["world_latents"] = model.encode_world(batch.pop("world_pixel_values"))
    return batch


@dataclass
class TrainingStep:
    """One optimisation step of `model` on a fixed batch: forward with loss, backward, AdamW step."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batch: Batch

    def __call__(self) -> None:
        self.model(**self.batch).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def memory(self, device: torch.device) -> dict[str, int]:
        """Bytes held between steps (weights, buffers, optimizer states, batch), the most one step allocates on top,
        and their sum, the peak."""
        resident = resident_bytes(self.model, self.optimizer, self.batch)
        transient = transient_peak_bytes(self, device)
        return {"resident_bytes": resident, "transient_bytes": transient, "peak_memory_bytes": resident + transient}


def compare_training_steps(bench: Workbench, steps: dict[str, TrainingStep]) -> dict[str, Any]:
    """Times the steps interleaved, then measures the peak memory of one more step of each."""
    for step in steps.values():
        step.model.train()
    seconds = interleave(steps, bench.device, bench.preset.warmup, bench.preset.repeats)
    return {
        name: {"seconds": median(seconds[name]), "samples": seconds[name], **step.memory(bench.device)}
        for name, step in steps.items()
    }


def training_comparison(
    bench: Workbench,
    model: TheWorld,
    processor: TheWorldProcessor,
    with_vae: bool,
    checkpointed_model: TheWorld | None = None,
) -> dict[str, Any]:
    """TheWorld (cached latents; with the VAE live if `with_vae`; with gradient checkpointing if a
    `checkpointed_model` is given) against the Gemma baseline, same examples. Like Gemma, these compute the logits at
    every position; with a `checkpointed_model`, one more case computes them only where labels are (TheWorld's
    default)."""
    examples = bench.examples[: bench.preset.batch_size]
    world_batch = {**collate(processor, examples, bench.device), "logits_to_keep": 0}
    gemma_batch = collate(bench.gemma_processor, examples, bench.device)
    optimizer = make_optimizer(model)
    cached_batch = with_cached_latents(model, world_batch)
    steps = {"theworld_cached": TrainingStep(model, optimizer, cached_batch)}
    if with_vae:
        steps["theworld_vae"] = TrainingStep(model, optimizer, world_batch)
    if checkpointed_model is not None:
        checkpointed_optimizer = make_optimizer(checkpointed_model)
        steps["theworld_checkpointed"] = TrainingStep(checkpointed_model, checkpointed_optimizer, cached_batch)
        answer_only = {key: value for key, value in cached_batch.items() if key != "logits_to_keep"}
        steps["theworld_answer_logits"] = TrainingStep(model, optimizer, answer_only)
    steps["gemma"] = TrainingStep(bench.gemma, bench.gemma_optimizer, gemma_batch)
    cases = compare_training_steps(bench, steps)
    baseline_length, world_length = gemma_batch["input_ids"].shape[1], world_batch["input_ids"].shape[1]
    floor = world_length / baseline_length
    ratios = {}
    for name in [name for name in steps if name != "gemma"]:
        ratios[f"{name}_time"] = cases[name]["seconds"] / cases["gemma"]["seconds"]
        ratios[f"{name}_memory"] = cases[name]["peak_memory_bytes"] / cases["gemma"]["peak_memory_bytes"]
    return {
        "world_tokens": model.config.num_world_tokens,
        "batch_size": len(examples),
        "sequence_length": {"gemma": baseline_length, "theworld": world_length},
        "floor": floor,
        "cases": cases,
        "ratios": ratios,
        "time_over_floor": ratios["theworld_cached_time"] / floor,
    }


def token_sweep_figure(bench: Workbench) -> dict[str, Any]:
    """Figure 2: the cached-latent training step over the preset's world-token counts, against (L + N) / L."""
    points = []
    for grid_size in bench.preset.sweep_grid_sizes:
        model, processor = load_world(bench, grid_size)
        point = training_comparison(bench, model, processor, with_vae=False)
        points.append(point)
        del model
        gc.collect()
    return {"points": points}


class TokenTimes(BaseStreamer):
    """Records when `generate` hands over the prompt and then each new token."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        synchronize(self.device)
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def generation_timing(model: Any, inputs: Batch, new_tokens: int, device: torch.device) -> tuple[float, float]:
    """(seconds to the first new token, seconds per further token) of one greedy `generate` call with the KV cache."""
    streamer = TokenTimes(device)
    synchronize(device)
    start = time.perf_counter()
    model.generate(
        **inputs,
        do_sample=False,
        top_k=None,
        top_p=None,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        streamer=streamer,
    )
    first_token, last_token = streamer.times[1], streamer.times[-1]
    return first_token - start, (last_token - first_token) / (new_tokens - 1)


GENERATION_FIGURES = ("prefill_seconds", "decode_seconds_per_token")


def left_padded(inputs: Batch, length: int, pad_token_id: int) -> Batch:
    """`inputs` (one prompt) left-padded to `length` tokens: the same context length, the padding masked out."""
    extra = length - inputs["input_ids"].shape[1]
    padding = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    return {**inputs, **{name: F.pad(inputs[name], (extra, 0), value=value) for name, value in padding.items()}}


def generation_figure(bench: Workbench, model: TheWorld, processor: TheWorldProcessor) -> dict[str, Any]:
    """Figure 3: prefill and per-token decode of TheWorld (world on, VAE live) and of Gemma (world off), and of Gemma
    on its prompt left-padded to TheWorld's length, which isolates what a longer context alone costs."""
    example = bench.examples[0]
    image = load_image(example.image_path)

    def inputs(proc: Gemma3Processor) -> Batch:
        return dict(vsr_inputs(proc, [example.caption], [image]).to(bench.device))

    world_inputs, gemma_inputs = inputs(processor), inputs(bench.gemma_processor)
    length, pad_token_id = world_inputs["input_ids"].shape[1], bench.gemma_processor.tokenizer.pad_token_id
    runs = {
        "theworld": (model.eval(), world_inputs),
        "gemma": (bench.gemma.eval(), gemma_inputs),
        "gemma_same_length": (bench.gemma, left_padded(gemma_inputs, length, pad_token_id)),
    }
    calls = {
        name: functools.partial(generation_timing, run_model, run_inputs, bench.preset.new_tokens, bench.device)
        for name, (run_model, run_inputs) in runs.items()
    }
    results = round_robin(calls, bench.preset.warmup, bench.preset.repeats)
    cases = {
        name: {
            "context_tokens": runs[name][1]["input_ids"].shape[1],
            "prefill_seconds": median(prefill for prefill, _ in results[name]),
            "decode_seconds_per_token": median(decode for _, decode in results[name]),
            "samples": results[name],
        }
        for name in runs
    }
    return {
        "new_tokens": bench.preset.new_tokens,
        "cases": cases,
        "ratios": {key: cases["theworld"][key] / cases["gemma"][key] for key in GENERATION_FIGURES},
        "same_length_ratios": {
            key: cases["theworld"][key] / cases["gemma_same_length"][key] for key in GENERATION_FIGURES
        },
    }


def loading_figure(bench: Workbench, model: TheWorld, processor: TheWorldProcessor) -> dict[str, Any]:
    """Figure 4: `AutoModel.from_pretrained(checkpoint)` against the two bases alone; checkpoint bytes."""
    checkpoint = bench.directory / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    bases = bench.bases

    def load_checkpoint() -> None:
        AutoModel.from_pretrained(checkpoint, trust_remote_code=True)

    def load_bases() -> None:
        Gemma3ForConditionalGeneration.from_pretrained(bases.gemma)
        AutoencoderKLWan.from_pretrained(bases.cosmos, subfolder="vae")

    seconds = interleave(
        {"theworld": load_checkpoint, "bases": load_bases}, bench.device, warmup=1, repeats=bench.preset.load_repeats
    )
    trainable = sum(parameter.numel() for parameter in model.trainable_state_dict().values())
    weights_bytes = (checkpoint / WEIGHTS_NAME).stat().st_size
    theworld_seconds, bases_seconds = median(seconds["theworld"]), median(seconds["bases"])
    return {
        "cases": {name: {"seconds": median(samples), "samples": samples} for name, samples in seconds.items()},
        "ratio": theworld_seconds / bases_seconds,
        "overhead_seconds": theworld_seconds - bases_seconds,
        "trainable_parameters": trainable,
        "weights_bytes": weights_bytes,
        "weights_overhead_bytes": weights_bytes - 4 * trainable,
        "checkpoint_folder_bytes": sum(path.stat().st_size for path in checkpoint.rglob("*") if path.is_file()),
    }


def training_epoch(model: TheWorld, optimizer: torch.optim.Optimizer, dataset: Dataset, bench: Workbench) -> None:
    """One pass over `dataset` as the training loop makes it: encode, collate, step."""
    collator = VSRCollator(bench.gemma_processor.tokenizer.pad_token_id)
    for batch in DataLoader(dataset, batch_size=bench.preset.batch_size, collate_fn=collator):
        TrainingStep(model, optimizer, {name: tensor.to(bench.device) for name, tensor in batch.items()})()


def latent_cache_figure(bench: Workbench, model: TheWorld, processor: TheWorldProcessor) -> dict[str, Any]:
    """Figure 5: an epoch on latents that the first epoch cached, against an epoch that runs the VAE.

    The VAE encode of the epoch's images alone is timed beside them: the cache saves exactly that, so the speedup is
    1 / (1 - its share of the uncached epoch).
    """
    examples = bench.examples[: bench.preset.epoch_examples]
    optimizer = make_optimizer(model.train())
    pixels = processor.preprocess_world_images([load_image(example.image_path) for example in examples])
    pixel_batches = pixels.to(bench.device).split(bench.preset.batch_size)

    def encode_epoch() -> None:
        for batch in pixel_batches:
            model.encode_world(batch)

    def epoch(cache: WorldLatentCache | None) -> Callable[[], None]:
        return lambda: training_epoch(model, optimizer, VSRTrainingDataset(examples, processor, cache), bench)

    cache = WorldLatentCache(bench.directory / "latent-cache", model, processor)
    image_paths = [example.image_path for example in examples]

    def first_epoch() -> None:
        cache.fill(image_paths, progress=False)
        epoch(cache)()

    first_seconds = timed(first_epoch, bench.device)
    seconds = interleave(
        {"without_cache": epoch(None), "with_cache": epoch(cache), "vae_encode": encode_epoch},
        bench.device,
        warmup=0,
        repeats=bench.preset.epoch_repeats,
    )
    cases = {name: {"seconds": median(samples), "samples": samples} for name, samples in seconds.items()}
    return {
        "examples": len(examples),
        "batch_size": bench.preset.batch_size,
        "first_epoch_seconds": first_seconds,
        "cases": cases,
        "speedup": cases["without_cache"]["seconds"] / cases["with_cache"]["seconds"],
        "vae_share_of_uncached_epoch": cases["vae_encode"]["seconds"] / cases["without_cache"]["seconds"],
    }


def measured_figures(preset: MeasuredPreset, directory: Path, device: torch.device) -> dict[str, Any]:
    """All five figures of a measured preset, with the bases and data written under `directory`."""
    bench = build_workbench(preset, directory, device)
    model, processor = load_world(bench)
    checkpointed, _ = load_world(bench)
    checkpointed.enable_activation_checkpointing()
    figures = {
        "training_step": training_comparison(bench, model, processor, with_vae=True, checkpointed_model=checkpointed),
        "latent_cache": latent_cache_figure(bench, model, processor),
        "generation": generation_figure(bench, model, processor),
        "loading": loading_figure(bench, model, processor),
    }
    del model, checkpointed
    gc.collect()
    figures["token_sweep"] = token_sweep_figure(bench)
    order = ("training_step", "token_sweep", "generation", "loading", "latent_cache")
    return {name: figures[name] for name in order}
