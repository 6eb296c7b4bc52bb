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
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.utils import CONFIG_NAME

from ..configuration_theworld import PROJECTOR_TYPES
from ..data.vsr import ON_BAD_IMAGE_HELP, OnBadImage, VSRExample, load_vsr_split
from ..encoders_theworld import BUILT_IN_WORLD_ENCODERS
from ..hub.files import HISTORY_NAME, TRAINING_CONFIG_NAME, TRAINING_STATE_DIR
from ..loading_theworld import LORA_TARGET_MODULES, lora_arguments
from ..modeling_theworld import TheWorld
from ..processing_theworld import TheWorldProcessor
from ..prompt import ANSWER_BY_LOSS, answer_token_ids
from .checkpoint import prune_step_checkpoints, read_training_state, save_checkpoint
from .choice_loss import answer_choice_loss
from .collation import VSRCollator, VSRTrainingDataset
from .describe import describe_world, described_scenes
from .evaluate import evaluate_vsr
from .latent_cache import WorldLatentCache
from .plots import plot_curves

CHECKPOINTS_DIR = "checkpoints"
FINAL_CHECKPOINT = "checkpoint"
DESCRIBE_CHECKPOINT = "describe"  # the model as the describe stage leaves it, its history and random states
# Settings a resumed run must share with the run it continues.
RUN_DEFINING_FIELDS = ("world_encoder_type", "world_image_size", "world_grid_size", "projector_type")
# Settings a run that starts from another run's describe stage must share with it.
DESCRIBE_DEFINING_FIELDS = (
    "gemma",
    "world_encoder_path",
    "world_encoder_subfolder",
    "describe_steps",
    "describe_learning_rate",
    "describe_data_dir",
    "lora_rank",
    "lora_alpha",
    "lora_target_modules",
    "seed",
    "dtype",
)


@dataclass
class TrainingConfig:
    """Everything one fine-tuning run needs; `theworld train` takes each field as an option (`--batch-size 16`)."""

    gemma: str = field(metadata={"help": "Gemma 3 base: a Hub id (google/gemma-3-4b-it) or a local folder"})
    data_dir: Path = field(metadata={"aliases": ["--data"], "help": "folder with train.jsonl (and dev.jsonl)"})
    output_dir: Path = field(
        metadata={
            "help": "run folder: checkpoint/, checkpoints/, describe/ (after a describe stage), history.json, curves"
        }
    )
    images_dir: Path | None = field(
        default=None, metadata={"aliases": ["--images"], "help": "image folder (default: DATA_DIR/images)"}
    )
    world_encoder_type: str = field(
        default="wan2.1",
        metadata={
            "aliases": ["--world-encoder"],
            "help": f"world encoder: {', '.join(BUILT_IN_WORLD_ENCODERS)}, or a type an installed plugin offers",
        },
    )
    world_encoder_path: str | None = field(
        default=None,
        metadata={
            "aliases": ["--cosmos"],
            "help": "repository of the world encoder, a Hub id or a local folder (default: the type's reference one)",
        },
    )
    world_encoder_subfolder: str | None = field(
        default=None, metadata={"help": "its subfolder (default: the type's, e.g. vae/ for wan2.1; '' for none)"}
    )
    world_image_size: int | None = field(
        default=None, metadata={"help": "side of the square world view in pixels (default: the encoder type's)"}
    )
    world_grid_size: int = field(
        default=16, metadata={"help": "the latent grid is cut into this many patches a side, one world token each"}
    )
    projector_type: str = field(
        default="mlp", metadata={"choices": list(PROJECTOR_TYPES), "help": "world projector architecture"}
    )
    lora_rank: int = field(default=0, metadata={"help": "rank of LoRA adapters on the language model (0: none)"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (default: twice the rank)"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LORA_TARGET_MODULES), metadata={"help": "modules that get LoRA adapters"}
    )
    train_language_model: bool = field(default=False, metadata={"help": "train Gemma's whole language model too"})
    train_vision_tower: bool = field(default=False, metadata={"help": "train Gemma's SigLIP vision tower too"})
    train_multi_modal_projector: bool = field(
        default=False, metadata={"help": "train Gemma's own image projector too"}
    )
    describe_steps: int = field(
        default=0,
        metadata={
            "help": "steps of a describe stage before the VSR task: the world projector learns to write sentences "
            "stating each training scene's relations into the world tokens (synthetic data only; 0: none)"
        },
    )
    describe_learning_rate: float = field(default=2e-3, metadata={"help": "peak learning rate of the describe stage"})
    describe_data_dir: Path | None = field(
        default=None,
        metadata={
            "help": "synthetic data set whose train.jsonl and dev.jsonl scenes (images in its images/) the describe "
            "stage learns from, e.g. scenes of every concept as an alignment set (default: DATA_DIR and IMAGES_DIR)"
        },
    )
    describe_from: Path | None = field(
        default=None,
        metadata={
            "help": "start from the describe stage another run left in its OUTPUT_DIR/describe instead of running it "
            "again (same bases, layout, describe settings and seed)"
        },
    )
    freeze_world_projector: bool = field(
        default=False,
        metadata={
            "help": "keep the world projector and world position embeddings as they are in the VSR task (e.g. as the "
            "describe stage left them); LoRA adapters and unfrozen Gemma parts still train"
        },
    )
    answer_loss: Literal["tokens", "choices"] = field(
        default="tokens",
        metadata={
            "help": "tokens: cross-entropy of the answer's tokens over the whole vocabulary; choices: cross-entropy "
            'between the first tokens of "False" and "True" where the answer starts'
        },
    )
    epochs: int = field(default=3, metadata={"help": "passes over the training split"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; overrides --epochs"})
    batch_size: int = field(default=8, metadata={"help": "examples per device per forward pass"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "forward passes per optimizer step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name (cosine, linear, ...)"})
    seed: int = field(default=0, metadata={"help": "random seed (initialisation, data order)"})
    save_every: int = field(default=200, metadata={"help": "steps between resumable step checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"help": "step checkpoints kept (the oldest are deleted)"})
    eval_every: int | None = field(default=None, metadata={"help": "steps between dev evaluations (default: none)"})
    eval_examples: int = field(default=128, metadata={"help": "dev examples per evaluation"})
    use_latent_cache: bool = field(
        default=True, metadata={"help": "encode each image with the world encoder once and keep its latent on disk"}
    )
    latent_cache_dir: Path | None = field(
        default=None, metadata={"help": "where the latents are kept (default: OUTPUT_DIR/latent-cache)"}
    )
    on_bad_image: OnBadImage = field(default="error", metadata={"help": ON_BAD_IMAGE_HELP})
    dtype: str = field(default="float32", metadata={"help": "dtype of the frozen bases (float32, bfloat16, ...)"})
    mixed_precision: Literal["no", "bf16", "fp16"] = field(default="no", metadata={"help": "Accelerate autocast"})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in the backward pass: less memory, more time"}
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        self.data_dir, self.output_dir = Path(self.data_dir), Path(self.output_dir)
        self.images_dir = Path(self.images_dir) if self.images_dir is not None else self.data_dir / "images"
        if self.describe_data_dir is not None:
            self.describe_data_dir = Path(self.describe_data_dir)
        if self.describe_from is not None:
            self.describe_from = Path(self.describe_from)
            if not self.describe_steps:
                raise ValueError(
                    f"describe_from={str(self.describe_from)!r} is set but describe_steps is 0: set describe_steps "
                    "to the describe stage's steps, or leave describe_from unset for a run without one."
                )
        if self.latent_cache_dir is not None:
            self.latent_cache_dir = Path(self.latent_cache_dir)

    def to_json_string(self) -> str:
        """The settings as JSON, paths as strings: what a run's training_config.json holds."""
        return json.dumps(asdict(self), default=str, indent=2)


@dataclass
class TrainingResult:
    checkpoint: Path
    steps: int
    history: dict[str, list]


def build_model(config: TrainingConfig) -> tuple[TheWorld, TheWorldProcessor]:
    """A new TheWorld on the configured bases, with the configured trainable parts."""
    model = TheWorld.from_bases(
        config.gemma,
        config.world_encoder_path,
        world_encoder_type=config.world_encoder_type,
        world_encoder_subfolder=config.world_encoder_subfolder,
        dtype=getattr(torch, config.dtype),
        **({"world_image_size": config.world_image_size} if config.world_image_size else {}),
        world_grid_size=config.world_grid_size,
        projector_type=config.projector_type,
        freeze_language_model=not config.train_language_model,
        freeze_vision_tower=not config.train_vision_tower,
        freeze_multi_modal_projector=not config.train_multi_modal_projector,
    )
    if config.lora_rank:
        model.add_language_model_lora(lora_arguments(config.lora_rank, config.lora_alpha, config.lora_target_modules))
    return model, TheWorldProcessor.from_model_config(model.config)


def resume_model(checkpoint: Path, config: TrainingConfig) -> tuple[TheWorld, TheWorldProcessor]:
    """The model and processor of an interrupted run, refusing to mix runs of different settings."""
    model = TheWorld.from_pretrained(checkpoint, dtype=getattr(torch, config.dtype))
    for name in RUN_DEFINING_FIELDS:
        if getattr(config, name) is not None and getattr(model.config, name) != getattr(config, name):
            raise ValueError(
                f"{checkpoint} was trained with {name}={getattr(model.config, name)!r}, this run asks for "
                f"{getattr(config, name)!r}. Use another --output-dir to start a new run, or the same settings to "
                "resume."
            )
    return model, TheWorldProcessor.from_pretrained(checkpoint)


def finished_describe_stage(config: TrainingConfig) -> Path | None:
    """The finished describe stage this run starts from: `describe_from`, or its own if an earlier start of this run
    got that far; None if the describe stage has to run."""
    if not config.describe_steps:
        return None
    folder = config.describe_from or config.output_dir / DESCRIBE_CHECKPOINT
    saved = folder / TRAINING_CONFIG_NAME
    if not (saved.is_file() and (folder / CONFIG_NAME).is_file()):
        if config.describe_from is None:
            return None
        raise FileNotFoundError(
            f"{folder} holds no finished describe stage (a model with its {TRAINING_CONFIG_NAME}): point "
            f"describe_from at the {DESCRIBE_CHECKPOINT}/ folder of a run with describe_steps > 0, or leave it unset "
            "to run the describe stage."
        )
    settings = json.loads(saved.read_text())
    wanted = json.loads(config.to_json_string())
    for settings_of in (settings, wanted):  # the scenes it learns from: its own data unless describe_data_dir is set
        settings_of["describe_data_dir"] = settings_of["describe_data_dir"] or settings_of["data_dir"]
    for name in DESCRIBE_DEFINING_FIELDS:
        if settings[name] != wanted[name]:
            raise ValueError(
                f"The describe stage in {folder} ran with {name}={settings[name]!r}, this run asks for "
                f"{wanted[name]!r}. Use the same settings, or another output_dir (and no describe_from) to run the "
                "describe stage anew."
            )
    return folder


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
    resume_from = get_last_checkpoint(checkpoints_dir) if checkpoints_dir.is_dir() else None
    resume_from = Path(resume_from) if resume_from else None
    describe_from = None if resume_from else finished_describe_stage(config)
    start_from = resume_from or describe_from
    model, processor = resume_model(start_from, config) if start_from else build_model(config)
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

    step, history = 0, {"loss": [], "dev_accuracy": []}
    if describe_from:  # its history and the random states it left: the run goes on as if it had run the stage
        history |= read_training_state(describe_from / TRAINING_STATE_DIR)[1]
    elif config.describe_steps and resume_from is None:
        describe_dir, describe_images = config.data_dir, config.images_dir
        if config.describe_data_dir is not None:
            describe_dir, describe_images = config.describe_data_dir, config.describe_data_dir / "images"
        dev_path = describe_dir / "dev.jsonl"
        dev_scenes = described_scenes(dev_path, describe_images) if dev_path.exists() else []
        history |= describe_world(
            model,
            processor,
            described_scenes(describe_dir / "train.jsonl", describe_images),
            dev_scenes[: config.eval_examples],
            config.describe_steps,
            config.describe_learning_rate,
            latent_cache,
            progress=config.progress and accelerator.is_main_process,
        )
        if accelerator.is_main_process:
            save_checkpoint(
                model,
                processor,
                config.output_dir / DESCRIBE_CHECKPOINT,
                training_state={"step": 0, "history": history},
                run_files={TRAINING_CONFIG_NAME: config.to_json_string()},
            )
        accelerator.wait_for_everyone()

    if config.freeze_world_projector:  # still saved: the checkpoint holds what the configuration trains
        model.world_projector.requires_grad_(False)
        model.world_position_embeddings.requires_grad_(False)

    dataset = VSRTrainingDataset(train_examples, processor, latent_cache)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=VSRCollator(processor.tokenizer.pad_token_id),
    )
    answer_ids = torch.tensor(answer_token_ids(processor.tokenizer)) if config.answer_loss == "choices" else None
    answer_by = ANSWER_BY_LOSS[config.answer_loss]  # dev accuracy as the loss trains it
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    scheduler = get_scheduler(config.lr_scheduler, optimizer, config.warmup_steps, total_steps)

    if resume_from:
        step, history = read_training_state(resume_from / TRAINING_STATE_DIR, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)

    def save_step_checkpoint() -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"optimizer": optimizer, "scheduler": scheduler, "step": step, "history": history}
            save_checkpoint(
                unwrapped, processor, checkpoints_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}", training_state=state
            )
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
                if config.answer_loss == "choices":
                    loss = answer_choice_loss(model, batch, answer_ids)
                else:
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
                    result = evaluate_vsr(unwrapped, processor, dev_examples, answer_by=answer_by, progress=False)
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
        (config.output_dir / HISTORY_NAME).write_text(json.dumps(history))
        (config.output_dir / TRAINING_CONFIG_NAME).write_text(config.to_json_string())
        plot_curves(history, config.output_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainingResult(checkpoint=final, steps=step, history=history)
