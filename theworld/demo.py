"""The offline demo: bases, synthetic VSR, fine-tuning, evaluation with world ablation, fresh-process reload.

The world encoder is a tiny Cosmos-style VAE trained as an autoencoder on synthetic scenes. The Gemma 3 is either a
random 2-layer stand-in (`tiny`, the default: minutes on a laptop CPU) or the small real base, the pretrained Gemma 3
270M kept frozen (`small-real`). The code path is the one real weights take.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .data import SYNTH_RELATIONS, load_vsr_split, synthesize_vsr
from .hub.files import HISTORY_NAME
from .markdown import markdown_table
from .modeling_theworld import TheWorld
from .processing_theworld import TheWorldProcessor
from .prompt import ANSWER_BY_LOSS, ANSWERS, answer_token_ids, vsr_messages
from .testing.small_real_base import cached_small_real_base
from .testing.tiny import make_tiny_bases
from .testing.tiny_vae import DEFAULT_STEPS, cached_trained_tiny_vae
from .training import TrainingConfig, markdown_report, train, world_ablation_report, write_reports
from .training.train import DESCRIBE_CHECKPOINT

# The default recipe for the tiny stand-in bases (see the README for the recipe on real weights): one global world
# token (the whole 8x8 latent flattened) and the random tiny language model trained along with the projector.
DEMO_RECIPE: dict[str, Any] = {
    "world_image_size": 64,
    "world_grid_size": 1,
    "projector_type": "mlp",
    "train_language_model": True,
    "learning_rate": 2e-3,
    "batch_size": 16,
    "epochs": 1,
    "warmup_steps": 10,
    "save_every": 100,
    "eval_every": 50,
    "eval_examples": 96,
}
# The relations the demo's captions use by default. Judging them needs the two objects' distance, read from the world
# view; the directional ones (left of, above, ...) also need to bind each named object to its position, which the
# random 2-layer stand-in language model does not learn within the demo's budget (see the README).
DEMO_RELATIONS: tuple[str, ...] = ("close to", "far away from")

# The recipe for the small real base: the pretrained language model stays frozen. A describe stage first teaches the
# grid-transformer projector to write each scene's relations as sentences into an 8 x 8 grid of world tokens; the
# projector then stays as it is while LoRA adapters on the attention learn the task with the choice loss ("False"
# against "True"). The demo's describe stage learns from the random split's scenes, which show every concept, on both
# splits (an alignment set apart from the task's data). See the README for what it reaches and why.
SMALL_REAL_RECIPE: dict[str, Any] = {
    "world_image_size": 64,
    "world_grid_size": 8,
    "projector_type": "transformer",
    "describe_steps": 3000,
    "describe_learning_rate": 1e-3,
    "freeze_world_projector": True,
    "lora_rank": 16,
    "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "answer_loss": "choices",
    "learning_rate": 3e-4,
    "batch_size": 8,
    "max_steps": 400,
    "warmup_steps": 20,
    "dtype": "bfloat16",
    "mixed_precision": "bf16",
    "save_every": 100,
    "eval_every": 50,
    "eval_examples": 96,
}


@dataclass(frozen=True)
class DemoBase:
    """A Gemma 3 base the demo can run on: how it is built, and the recipe and relations the demo uses on it."""

    description: str
    build: Callable[[Path, int], Path]  # (demo output folder, seed) -> the Gemma 3 folder
    recipe: dict[str, Any]
    relations: tuple[str, ...]


DEMO_BASES: dict[str, DemoBase] = {
    "tiny": DemoBase(
        description="a random 2-layer Gemma 3 stand-in, trained along with the projector",
        build=lambda output_dir, seed: make_tiny_bases(output_dir / "bases", seed=seed).gemma,
        recipe=DEMO_RECIPE,
        relations=DEMO_RELATIONS,
    ),
    "small-real": DemoBase(
        description="the small real base (the pretrained Gemma 3 270M, frozen; describe stage, then LoRA adapters)",
        build=lambda output_dir, seed: cached_small_real_base(seed=seed),
        recipe=SMALL_REAL_RECIPE,
        relations=SYNTH_RELATIONS,
    ),
}

SPLITS = ("random", "zero-shot")  # the synthetic splits the demo trains and tests on, each on its own
EVAL_NAME = "eval.json"
SUMMARY_NAME = "summary.md"
SEEDS_SUMMARY_NAME = "seeds.md"

RELOAD_SCRIPT = """
import json, sys
sys.modules["theworld"] = None  # the reload must work with transformers alone
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor
checkpoint, image_path, messages = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
choices = json.loads(sys.argv[4])  # {answer: its first token id} to answer by choice, or null to generate
model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=prompt, images=Image.open(image_path), add_special_tokens=False, return_tensors="pt")
if choices:
    with torch.no_grad():
        logits = model(**inputs, logits_to_keep=1).logits[0, -1]
    answer = max(choices, key=lambda name: logits[choices[name]].item())
else:
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(json.dumps({"class": type(model).__module__ + "." + type(model).__name__, "answer": answer}))
"""


@dataclass
class DemoConfig:
    """What the demo runs. `relations` and `recipe` default to the base's own (`DEMO_BASES`)."""

    output_dir: Path
    base: str = "tiny"
    seed: int = 0
    n_train: int = 10000
    n_dev: int = 200
    n_test: int = 400
    relations: tuple[str, ...] | None = None
    splits: tuple[str, ...] = SPLITS
    recipe: dict[str, Any] | None = None
    vae_steps: int = DEFAULT_STEPS
    progress: bool = True

    def __post_init__(self) -> None:
        if self.base not in DEMO_BASES:
            raise ValueError(f"Unknown demo base {self.base!r}; choose one of {', '.join(DEMO_BASES)}")
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown or not self.splits:
            raise ValueError(f"Unknown demo splits {unknown or list(self.splits)}; choose among {', '.join(SPLITS)}")
        if self.relations is None:
            self.relations = DEMO_BASES[self.base].relations
        if self.recipe is None:
            self.recipe = dict(DEMO_BASES[self.base].recipe)


def split_run_dir(output_dir: Path, split: str) -> Path:
    """Where the demo trains on a split: the random split's run is the demo's folder itself."""
    return output_dir if split == SPLITS[0] else output_dir / split


def reload_in_fresh_process(
    checkpoint: Path, image_path: Path, caption: str, choices: dict[str, int] | None = None
) -> dict[str, str]:
    """Answers one question in a new Python process that cannot import `theworld` (transformers alone): generated,
    or with `choices` ({answer: its first token id}) the answer whose first token scores higher."""
    arguments = [str(checkpoint), str(image_path), json.dumps(vsr_messages(caption)), json.dumps(choices)]
    with tempfile.TemporaryDirectory() as modules_cache:
        environment = {**os.environ, "HF_MODULES_CACHE": modules_cache, "HF_HUB_OFFLINE": "1"}
        completed = subprocess.run(
            [sys.executable, "-c", RELOAD_SCRIPT, *arguments],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"Reloading {checkpoint} in a fresh process failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def learning_curves_markdown(histories: dict[str, dict[str, list]]) -> str:
    """One row per split: the describe stage's end (if any), then at each dev evaluation its accuracy and the training
    loss averaged over the steps since the one before."""
    rows = []
    for split, history in histories.items():
        describe = "-"
        if history.get("describe_dev_token_accuracy"):
            words, scenes = (
                history["describe_dev_token_accuracy"][-1][1],
                history["describe_dev_sentence_accuracy"][-1][1],
            )
            describe = f"{words:.1%} words, {scenes:.1%} scenes exact"
        losses = [loss for _, loss in history["loss"]]
        curve, previous = [], 0
        for step, accuracy in history["dev_accuracy"]:
            window = losses[previous:step]
            curve.append(f"{step}: {accuracy:.1%} ({sum(window) / len(window):.3f})")
            previous = step
        rows.append([split, describe, ", ".join(curve) or "-"])
    header = ["split", "describe stage (dev)", "step: dev accuracy (mean training loss since the last)"]
    return markdown_table(header, rows)


def summary_markdown(
    reports: dict[str, dict[str, Any]],
    histories: dict[str, dict[str, list]],
    reload: dict[str, str],
    timings: dict[str, float],
    config: DemoConfig,
) -> str:
    lines = [
        "# TheWorld offline demo",
        "",
        f"Gemma 3: {DEMO_BASES[config.base].description}; world encoder: a tiny Cosmos-style VAE trained as an "
        f"autoencoder; synthetic VSR data with the relations {', '.join(repr(name) for name in config.relations)}.",
        "",
        markdown_table(
            ["test set", "examples", "world on", "world ablated", "world gain", "unparsed"],
            [
                [
                    name,
                    report["examples"],
                    f"{report['world']['accuracy']:.1%}",
                    f"{report['world_ablated']['accuracy']:.1%}",
                    f"{report['world_gain']:+.1%}",
                    report["world"]["unparsed"],
                ]
                for name, report in reports.items()
            ],
            numeric=5,
        ),
        "",
        f'Fresh-process reload ({reload["class"]}): asked "{reload["caption"]}" (label {reload["label"]}), '
        f"answered {reload['answer']!r} (by {reload['answer_by']}).",
        "",
        "## Learning curves",
        "",
        learning_curves_markdown(histories),
        "",
        markdown_table(["stage", "seconds"], [[stage, f"{seconds:.1f}"] for stage, seconds in timings.items()], 1),
        "",
        "## Per relation",
        "",
        markdown_report(reports),
    ]
    return "\n".join(lines)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Runs the whole demo; leaves checkpoint, eval.json/.md, summary.md and the curves in `config.output_dir`."""
    output_dir = Path(config.output_dir)
    timings: dict[str, float] = {}

    def timed(stage: str, started: float) -> None:
        timings[stage] = time.perf_counter() - started

    started = time.perf_counter()
    gemma = DEMO_BASES[config.base].build(output_dir, config.seed)
    cosmos = cached_trained_tiny_vae(seed=config.seed, steps=config.vae_steps, progress=config.progress)
    timed(f"bases ({config.base} Gemma 3, trained tiny VAE)", started)

    started = time.perf_counter()
    data = {
        split: synthesize_vsr(
            output_dir / "data" / split,
            seed=config.seed,
            n_train=config.n_train,
            n_dev=config.n_dev,
            n_test=config.n_test,
            zero_shot=split == "zero-shot",
            relations=config.relations,
        )
        for split in SPLITS
        if split in config.splits or split == "random"  # the describe stage's scenes are the random split's
    }
    timed("synthetic VSR data", started)

    # The describe stage is the same on every split: it runs on the first, the others start from it.
    first_run_dir = split_run_dir(output_dir, config.splits[0])
    shared_describe = first_run_dir / DESCRIBE_CHECKPOINT if config.recipe.get("describe_steps") else None
    reports, histories = {}, {}
    for split in config.splits:
        data_dir, run_dir = data[split], split_run_dir(output_dir, split)
        training = TrainingConfig(
            gemma=str(gemma),
            world_encoder_path=str(cosmos),
            data_dir=data_dir,
            describe_data_dir=data["random"],
            describe_from=None if run_dir == first_run_dir else shared_describe,
            output_dir=run_dir,
            seed=config.seed,
            progress=config.progress,
            **config.recipe,
        )
        started = time.perf_counter()
        result = train(training)
        histories[split] = result.history
        timed(f"training ({split} split, {result.steps} steps)", started)

        started = time.perf_counter()
        model = TheWorld.from_pretrained(result.checkpoint)
        processor = TheWorldProcessor.from_pretrained(result.checkpoint)
        answer_by = ANSWER_BY_LOSS[training.answer_loss]
        test = load_vsr_split(data_dir / "test.jsonl", data_dir / "images").examples
        reports[f"{split}/test"] = world_ablation_report(
            model, processor, test, answer_by=answer_by, progress=config.progress
        )
        timed(f"evaluation ({split} test, world on and ablated)", started)
    write_reports(reports, output_dir / EVAL_NAME)

    started = time.perf_counter()
    reloaded = config.splits[0]  # its checkpoint answers its first test question in a fresh process
    example = load_vsr_split(data[reloaded] / "test.jsonl", data[reloaded] / "images").examples[0]
    choices = (
        dict(zip(ANSWERS, answer_token_ids(processor.tokenizer), strict=True)) if answer_by == "choices" else None
    )
    checkpoint = split_run_dir(output_dir, reloaded) / "checkpoint"
    reload = reload_in_fresh_process(checkpoint, example.image_path, example.caption, choices)
    reload.update(caption=example.caption, label=str(example.label), answer_by=answer_by)
    timed("reload in a fresh process + one answer", started)

    summary = summary_markdown(reports, histories, reload, timings, config)
    (output_dir / SUMMARY_NAME).write_text(summary)
    return {"reports": reports, "histories": histories, "reload": reload, "timings": timings, "summary": summary}


def seeds_markdown(reports: dict[int, dict[str, dict[str, Any]]], histories: dict[int, dict[str, dict]]) -> str:
    """Each seed's test accuracy per relation, world on / ablated, and their mean; then each seed's learning curves."""
    seeds = list(reports)
    lines = ["# TheWorld offline demo over seeds", ""]
    for test_set in reports[seeds[0]]:
        first = reports[seeds[0]][test_set]["world"]
        groups = [("**overall**", None), *((name, name) for name in first["per_relation"])]
        rows = []
        for label, relation in groups:
            pairs = []
            for seed in seeds:
                report = reports[seed][test_set]
                on, off = (
                    report[side] if relation is None else report[side]["per_relation"][relation]
                    for side in ("world", "world_ablated")
                )
                pairs.append((on["accuracy"], off["accuracy"]))
            total = first["total"] if relation is None else first["per_relation"][relation]["total"]
            cells = [f"{on:.1%} / {off:.1%}" for on, off in pairs]
            mean = [sum(values) / len(values) for values in zip(*pairs, strict=True)]
            rows.append([label, total, *cells, f"{mean[0]:.1%} / {mean[1]:.1%}"])
        header = ["relation", "n", *(f"seed {seed}" for seed in seeds), "mean"]
        lines += [f"## {test_set}: world on / world ablated", "", markdown_table(header, rows, len(seeds) + 2), ""]
    curves = {f"seed {seed}, {split}": history for seed in seeds for split, history in histories[seed].items()}
    lines += ["## Learning curves", "", learning_curves_markdown(curves), ""]
    return "\n".join(lines)


def run_demo_seeds(config: DemoConfig, seeds: Sequence[int]) -> str:
    """Runs the demo once per seed into `config.output_dir/seed-S` (a seed whose summary is there already is not run
    again) and writes `seeds.md` there (`seeds_markdown`); returns it."""
    reports, histories = {}, {}
    for seed in seeds:
        seed_dir = Path(config.output_dir) / f"seed-{seed}"
        if not (seed_dir / SUMMARY_NAME).is_file():
            run_demo(replace(config, output_dir=seed_dir, seed=seed))
        reports[seed] = json.loads((seed_dir / EVAL_NAME).read_text())
        histories[seed] = {
            split: json.loads((split_run_dir(seed_dir, split) / HISTORY_NAME).read_text()) for split in config.splits
        }
    summary = seeds_markdown(reports, histories)
    (Path(config.output_dir) / SEEDS_SUMMARY_NAME).write_text(summary)
    return summary
