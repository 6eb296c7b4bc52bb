"""The text oracle: Gemma 3's frozen language model, with LoRA adapters, answering the synthetic VSR questions from a
perfect description of the scene written as text, instead of from the world view.

It measures what the language model learns once the scene reaches it in a form it already reads, in four forms:
`relations` states every synthetic relation that holds between the two objects, `description` is the sentence the
describe stage teaches the world projector to write (`describe_scene`), `coordinates` gives each object's centre in
pixels, `none` gives nothing (the caption-only prior). A world path can at best hand the language model
what one of these forms holds, so each is a ceiling for the recipes that put that much into the world tokens. With
`with_image`, each prompt also holds the question's image before the scene text, through Gemma 3's own image path, as
TheWorld's prompts do.
"""

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from transformers import AutoProcessor, Gemma3ForConditionalGeneration, get_scheduler

from .data import VSRExample, load_image, vsr_example_from_row
from .data.synth import SYNTH_RELATIONS, SceneObject, describe_scene, relation_holds
from .loading_theworld import LORA_TARGET_MODULES, lora_arguments
from .markdown import markdown_table
from .prompt import QUESTION_TEMPLATE, answer_token_ids
from .training.evaluate import EvalResult
from .training.plots import plot_curves

SCENE_FORMS = ("relations", "description", "coordinates", "none")
REPORT_FILE = "text-oracle.json"


@dataclass
class TextOracleConfig:
    """One text-oracle run; `theworld text-oracle` takes each field as an option."""

    gemma: str = field(metadata={"help": "Gemma 3 base folder or Hub id (e.g. the small real base)"})
    data_dir: Path = field(metadata={"help": "synthetic VSR data (theworld synth-vsr): train/dev/test.jsonl"})
    output_dir: Path = field(metadata={"help": f"{REPORT_FILE}, loss.png and accuracy.png go here"})
    scene: str = field(default="relations", metadata={"help": f"how the scene is written: {', '.join(SCENE_FORMS)}"})
    steps: int = field(default=300, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "questions per step"})
    learning_rate: float = field(default=3e-4, metadata={"help": "peak learning rate of the LoRA adapters (AdamW)"})
    lora_rank: int = field(default=16, metadata={"help": "rank of the LoRA adapters"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LORA_TARGET_MODULES), metadata={"help": "modules that get LoRA adapters"}
    )
    eval_every: int = field(default=50, metadata={"help": "steps between dev evaluations"})
    eval_examples: int = field(default=96, metadata={"help": "dev examples per evaluation"})
    seed: int = field(default=0, metadata={"help": "random seed (adapters, data order)"})
    with_image: bool = field(
        default=False,
        metadata={"help": "put each question's image (Gemma 3's image tokens) before the scene text, as TheWorld"},
    )

    def __post_init__(self) -> None:
        if self.scene not in SCENE_FORMS:
            raise ValueError(f"Unknown scene form {self.scene!r}; choose one of {', '.join(SCENE_FORMS)}")


@dataclass
class OracleQuestion:
    """A VSR example and its prompt, which holds the scene text instead of an image."""

    prompt: str
    example: VSRExample


def scene_text(objects: Sequence[SceneObject], form: str) -> str:
    """The scene written in `form`; `relations` speaks of the objects in the given order."""
    if form == "relations":
        first, second = objects
        holding = [relation for relation in SYNTH_RELATIONS if relation_holds(relation, first, second)]
        return " ".join(f"The {first.name} is {relation} the {second.name}." for relation in holding)
    if form == "description":
        return describe_scene(objects)
    if form == "coordinates":
        return " ".join(
            f"The {item.name} is at x={(item.box[0] + item.box[2]) // 2}, y={(item.box[1] + item.box[3]) // 2}."
            for item in objects
        ) + (" (x grows to the right, y grows downwards.)" if objects else "")
    return ""


def load_questions(
    path: Path, form: str, tokenizer: Any, rng: random.Random, with_image: bool = False
) -> list[OracleQuestion]:
    """The questions of one synthetic split, each prompt holding the scene text (objects in a random order), after
    the image if `with_image`."""
    questions = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        row = json.loads(line)
        if "objects" not in row:
            raise ValueError(f"{path} has no 'objects' in its rows: the text oracle needs `theworld synth-vsr` data")
        example = vsr_example_from_row(row, path.parent / "images", where=f"{path}:{number}")
        objects = [SceneObject(item["colour"], item["shape"], tuple(item["box"])) for item in row["objects"]]
        rng.shuffle(objects)
        text = f"Scene: {scene_text(objects, form)} {QUESTION_TEMPLATE.format(caption=example.caption)}"
        image = [{"type": "image"}] if with_image else []
        messages = [{"role": "user", "content": [*image, {"type": "text", "text": text}]}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        questions.append(OracleQuestion(prompt, example))
    return questions


class TextOracle:
    """The frozen language model with LoRA adapters, scoring "False" against "True" at the answer position."""

    def __init__(self, config: TextOracleConfig) -> None:
        torch.manual_seed(config.seed)
        self.with_image = config.with_image
        self.processor = AutoProcessor.from_pretrained(config.gemma)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.model = Gemma3ForConditionalGeneration.from_pretrained(config.gemma, dtype=torch.float32)
        self.model.requires_grad_(False)
        lora = LoraConfig(**lora_arguments(config.lora_rank, target_modules=config.lora_target_modules))
        inject_adapter_in_model(lora, self.model.model.language_model)
        self.answer_ids = torch.tensor(answer_token_ids(self.tokenizer))

    def answer_logits(self, questions: Sequence[OracleQuestion]) -> torch.Tensor:
        """(batch, 2) logits of "False" and "True" as the answer's first token."""
        prompts = [question.prompt for question in questions]
        if self.with_image:
            images = [[load_image(question.example.image_path)] for question in questions]
            inputs = self.processor(
                text=prompts, images=images, return_tensors="pt", padding=True, add_special_tokens=False
            )
        else:
            inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        logits = self.model(**inputs, logits_to_keep=1).logits[:, -1]
        return logits[:, self.answer_ids]

    @torch.no_grad()
    def evaluate(self, questions: Sequence[OracleQuestion], batch_size: int = 32) -> EvalResult:
        """Accuracy overall, per relation and per meta-category (the larger of the two answer logits is the answer)."""
        self.model.eval()
        result = EvalResult()
        for start in range(0, len(questions), batch_size):
            batch = questions[start : start + batch_size]
            for question, prediction in zip(batch, self.answer_logits(batch).argmax(-1).tolist(), strict=True):
                result.add(question.example, prediction)
        self.model.train()
        return result


def run_text_oracle(config: TextOracleConfig) -> dict[str, Any]:
    """Trains the adapters on the training split, evaluating on dev as it goes and on test at the end; writes the
    report and the curves into `config.output_dir` and returns the report."""
    config.output_dir.mkdir(parents=True, exist_ok=True)
    oracle = TextOracle(config)
    rng = random.Random(config.seed)
    splits = {
        split: load_questions(
            Path(config.data_dir) / f"{split}.jsonl", config.scene, oracle.tokenizer, rng, config.with_image
        )
        for split in ("train", "dev", "test")
    }
    dev = splits["dev"][: config.eval_examples]
    parameters = [parameter for parameter in oracle.model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    warmup_steps = min(20, config.steps // 10)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=warmup_steps, num_training_steps=config.steps)
    history: dict[str, list] = {"loss": [], "dev_accuracy": [(0, oracle.evaluate(dev).overall.accuracy)]}
    order: list[int] = []
    started = time.perf_counter()
    oracle.model.train()
    for step in range(1, config.steps + 1):
        if len(order) < config.batch_size:
            order += rng.sample(range(len(splits["train"])), len(splits["train"]))
        batch = [splits["train"][order.pop()] for _ in range(config.batch_size)]
        labels = torch.tensor([question.example.label for question in batch])
        loss = torch.nn.functional.cross_entropy(oracle.answer_logits(batch).float(), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        history["loss"].append((step, loss.item()))
        if step % config.eval_every == 0 or step == config.steps:
            history["dev_accuracy"].append((step, oracle.evaluate(dev).overall.accuracy))
    seconds = time.perf_counter() - started
    report = {
        "config": {**vars(config), "data_dir": str(config.data_dir), "output_dir": str(config.output_dir)},
        "test": oracle.evaluate(splits["test"]).to_dict(),
        "seconds_per_step": seconds / max(config.steps, 1),
        "history": history,
    }
    (config.output_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    plot_curves(history, config.output_dir)
    return report


def oracle_markdown(report: dict[str, Any]) -> str:
    """The test accuracy per relation and the dev curve of one run."""
    test = report["test"]
    rows = [[relation, f"{score['accuracy']:.1%}"] for relation, score in test["per_relation"].items()]
    curve = ", ".join(f"{step}: {accuracy:.1%}" for step, accuracy in report["history"]["dev_accuracy"])
    config = report["config"]
    recent = [loss for _, loss in report["history"]["loss"][-20:]]
    return "\n".join(
        [
            f"Text oracle, scene written as {config['scene']!r}{' after the image' if config['with_image'] else ''}: "
            f"{config['steps']} steps of {config['batch_size']}, "
            f"LoRA rank {config['lora_rank']} on {', '.join(config['lora_target_modules'])}, "
            f"learning rate {config['learning_rate']:g} ({report['seconds_per_step']:.2f} s/step)",
            "",
            markdown_table(["relation", "test accuracy"], [*rows, ["**overall**", f"{test['accuracy']:.1%}"]], 1),
            "",
            f"Dev accuracy by step: {curve}",
            f"Mean training loss over the last {len(recent)} steps: {sum(recent) / max(1, len(recent)):.3f} "
            f"(chance: ln 2 = {math.log(2):.3f})",
        ]
    )
