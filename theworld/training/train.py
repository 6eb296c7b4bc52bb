"""Fine-tuning TheWorld on VSR with Accelerate: projector-only by default, LoRA and unfreezing as options."""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.data_loader import skip_first_batches
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data import VSRExample, load_vsr_split
from ..modeling_theworld import TheWorld
from ..processing_theworld import TheWorldProcessor
from .checkpoint import latest_step_checkpoint, prune_step_checkpoints, read_training_state, save_checkpoint
from .data import VSRCollator, VSRTrainingDataset
from .evaluate import evaluate_vsr
from .latent_cache import WorldLatentCache
from .plots import plot_curves

CHECKPOINTS_DIR = "checkpoints"
FINAL_CHECKPOINT = "checkpoint"
# Settings a resumed run must share with the run it continues.
RUN_DEFINING_FIELDS = ("world_image_size", "world_grid_size", "projector_type")


@dataclass
class TrainingConfig:
    """Everything one fine-tuning run needs; the command line mirrors these fields."""

    gemma: str
    cosmos: str
    data_dir: Path
    output_dir: Path
    images_dir: Path | None = None
    world_image_size: int = 512
    world_grid_size: int = 16
    projector_type: str = "mlp"
    lora_rank: int = 0
    lora_alpha: int | None = None
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    train_language_model: bool = False
    train_vision_tower: bool = False
    train_multi_modal_projector: bool = False
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "cosine"
    seed: int = 0
    save_every: int = 200
    keep_checkpoints: int = 2
    eval_every: int | None = None
    eval_examples: int = 128
    use_latent_cache: bool = True
    latent_cache_dir: Path | None = None
    on_bad_image: Literal["error", "skip"] = "error"
    dtype: str = "float32"
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.data_dir, self.output_dir = Path(self.data_dir), Path(self.output_dir)
        self.images_dir = Path(self.images_dir) if self.images_dir is not None else self.data_dir / "images"
        if self.latent_cache_dir is not None:
            self.latent_cache_dir = Path(self.latent_cache_dir)


@dataclass
class TrainingResult:
    checkpoint: Path
    steps: int
    history: dict[str, list]


def build_model(config: TrainingConfig) -> tuple[TheWorld, TheWorldProcessor]:
    """A new TheWorld on the configured bases, with the configured trainable parts."""
    model = TheWorld.from_bases(
        config.gemma,
        config.cosmos,
        dtype=getattr(torch, config.dtype),
        world_image_size=config.world_image_size,
        world_grid_size=config.world_grid_size,
        projector_type=config.projector_type,
        freeze_language_model=not config.train_language_model,
        freeze_vision_tower=not config.train_vision_tower,
        freeze_multi_modal_projector=not config.train_multi_modal_projector,
    )
    if config.lora_rank:
        model.add_language_model_lora(
            {
                "r": config.lora_rank,
                "lora_alpha": config.lora_alpha or 2 * config.lora_rank,
                "target_modules": list(config.lora_target_modules),
                "lora_dropout": 0.0,
            }
        )
    return model, TheWorldProcessor.from_model_config(model.config)


def resume_model(checkpoint: Path, config: TrainingConfig) -> tuple[TheWorld, TheWorldProcessor]:
    """The model and processor of an interrupted run, refusing to mix runs of different settings."""
    model = TheWorld.from_pretrained(checkpoint, dtype=getattr(torch, config.dtype))
    for name in RUN_DEFINING_FIELDS:
        if getattr(model.config, name) != getattr(config, name):
            raise ValueError(
                f"{checkpoint} was trained with {name}={getattr(model.config, name)!r}, this run asks for "
                f"{getattr(config, name)!r}. Use another --output-dir to start a new run, or the same settings to "
                "resume."
            )
    return model, TheWorldProcessor.from_pretrained(checkpoint)


def load_split(config: TrainingConfig, split: str) -> list[VSRExample]:
    path = config.data_dir / f"{split}.jsonl"
    if not path.exists():
        return []
    return load_vsr_split(path, config.images_dir, on_bad_image=config.on_bad_image).examples


def train(config: TrainingConfig) -> TrainingResult:
    """Runs (or resumes) a fine-tuning run and writes `OUTPUT/checkpoint`, the curves and `history.json`."""
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(config.seed)
    checkpoints_dir = config.output_dir / CHECKPOINTS_DIR
    resume_from = latest_step_checkpoint(checkpoints_dir)
    model, processor = resume_model(resume_from, config) if resume_from else build_model(config)
    if config.gradient_checkpointing:  # less activation memory for one more forward pass per step
        model.enable_activation_checkpointing()
    model.to(accelerator.device)

    train_examples = load_split(config, "train")
    if not train_examples:
        raise FileNotFoundError(f"No training examples in {config.data_dir / 'train.jsonl'}.")
    dev_examples = load_split(config, "dev")[: config.eval_examples]

    latent_cache = None
    if config.use_latent_cache:
        latent_cache = WorldLatentCache(
            config.latent_cache_dir or config.output_dir / "latent-cache", model, processor
        )
        with accelerator.main_process_first():
            latent_cache.fill(
                [example.image_path for example in train_examples],
                progress=config.progress and accelerator.is_main_process,
            )

    dataset = VSRTrainingDataset(train_examples, processor, latent_cache)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=VSRCollator(processor.tokenizer.pad_token_id),
    )
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    scheduler = get_scheduler(config.lr_scheduler, optimizer, config.warmup_steps, total_steps)

    step, history = 0, {"loss": [], "dev_accuracy": []}
    if resume_from:
        step, history = read_training_state(resume_from / "training_state", optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)

    def save_step_checkpoint() -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"optimizer": optimizer, "scheduler": scheduler, "step": step, "history": history}
            save_checkpoint(unwrapped, processor, checkpoints_dir / f"checkpoint-{step}", training_state=state)
            prune_step_checkpoints(checkpoints_dir, config.keep_checkpoints)
        accelerator.wait_for_everyone()

    progress = tqdm(
        total=total_steps, initial=step, desc="training", disable=not (config.progress and accelerator.is_main_process)
    )
    model.train()
    while step < total_steps:
        epoch = step // steps_per_epoch
        loader.set_epoch(epoch)
        epoch_loader = skip_first_batches(loader, (step % steps_per_epoch) * config.gradient_accumulation_steps)
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            history["loss"].append([step, accelerator.gather(loss.detach()).mean().item()])
            progress.update(1)
            progress.set_postfix(loss=f"{history['loss'][-1][1]:.4f}")
            if config.eval_every and dev_examples and step % config.eval_every == 0:
                if accelerator.is_main_process:
                    result = evaluate_vsr(unwrapped, processor, dev_examples, progress=False)
                    history["dev_accuracy"].append([step, result.overall.accuracy])
                model.train()
            if step % config.save_every == 0 and step < total_steps:
                save_step_checkpoint()
            if step >= total_steps:
                break
    progress.close()

    final = config.output_dir / FINAL_CHECKPOINT
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(unwrapped, processor, final)
        (config.output_dir / "history.json").write_text(json.dumps(history))
        (config.output_dir / "training_config.json").write_text(json.dumps(asdict(config), default=str, indent=2))
        plot_curves(history, config.output_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainingResult(checkpoint=final, steps=step, history=history)
