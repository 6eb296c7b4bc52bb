"""VSR evaluation: accuracy overall, per relation and per meta-category, with the world path on and ablated."""

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from ..data import VSRExample, load_image, meta_category
from ..data.vsr import ON_BAD_IMAGE_HELP, OnBadImage
from ..markdown import markdown_table
from ..modeling_theworld import TheWorld
from ..processing_theworld import TheWorldProcessor
from ..prompt import answer_token_ids, parse_answer, vsr_inputs

AnswerBy = Literal["generation", "choices"]
ANSWER_BY_HELP = (
    "generation: the greedy answer, parsed; choices: the answer whose first token scores higher where the answer "
    "starts (for a model trained with --answer-loss choices)"
)


@dataclass
class Score:
    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "correct": self.correct, "total": self.total}


@dataclass
class EvalResult:
    """Accuracy of one pass over a split. Unparsable answers count as wrong and are also counted apart."""

    overall: Score = field(default_factory=Score)
    per_relation: dict[str, Score] = field(default_factory=lambda: defaultdict(Score))
    per_meta_category: dict[str, Score] = field(default_factory=lambda: defaultdict(Score))
    unparsed: int = 0
    predictions: list[int | None] = field(default_factory=list)

    def add(self, example: VSRExample, prediction: int | None) -> None:
        correct = int(prediction == example.label)
        for score in (
            self.overall,
            self.per_relation[example.relation],
            self.per_meta_category[meta_category(example.relation)],
        ):
            score.correct += correct
            score.total += 1
        self.unparsed += prediction is None
        self.predictions.append(prediction)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.overall.to_dict(),
            "unparsed": self.unparsed,
            "per_relation": {name: score.to_dict() for name, score in sorted(self.per_relation.items())},
            "per_meta_category": {name: score.to_dict() for name, score in sorted(self.per_meta_category.items())},
        }


@dataclass
class EvaluationConfig:
    """What `theworld eval` reads and writes besides the checkpoint; the command takes each field as an option."""

    data: Path = field(metadata={"help": "a VSR jsonl file (e.g. test.jsonl)"})
    images: Path = field(metadata={"help": "the folder its image files are in"})
    output: Path = field(metadata={"help": "the JSON report; a Markdown table (.md) goes beside it"})
    batch_size: int = field(default=16, metadata={"help": "questions answered per forward pass"})
    answer_by: AnswerBy = field(default="generation", metadata={"help": ANSWER_BY_HELP})
    limit: int | None = field(default=None, metadata={"help": "evaluate only the first LIMIT examples"})
    on_bad_image: OnBadImage = field(default="error", metadata={"help": ON_BAD_IMAGE_HELP})


@torch.no_grad()
def evaluate_vsr(
    model: TheWorld,
    processor: TheWorldProcessor,
    examples: Sequence[VSRExample],
    *,
    ablate_world: bool = False,
    batch_size: int = 16,
    max_new_tokens: int = 4,
    answer_by: AnswerBy = "generation",
    progress: bool = True,
) -> EvalResult:
    """Answers to the shared VSR prompt as labels: greedy answers parsed, or with `answer_by="choices"` the answer
    whose first token scores higher where the answer starts. `ablate_world` zeroes the world tokens."""
    model.eval()
    tokenizer = processor.tokenizer
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    result = EvalResult()
    answer_ids = torch.tensor(answer_token_ids(tokenizer)) if answer_by == "choices" else None
    try:
        for start in tqdm(range(0, len(examples), batch_size), desc="evaluating", disable=not progress):
            batch = examples[start : start + batch_size]
            captions = [example.caption for example in batch]
            images = [load_image(example.image_path) for example in batch]
            inputs = vsr_inputs(processor, captions, images, padding=True).to(model.device)
            if answer_by == "choices":
                logits = model(**inputs, ablate_world=ablate_world, logits_to_keep=1).logits[:, -1]  # (b, vocab)
                labels = logits[:, answer_ids.to(logits.device)].argmax(-1).tolist()
            else:
                generated = model.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False, ablate_world=ablate_world
                )
                answers = tokenizer.batch_decode(
                    generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
                )
                labels = [parse_answer(answer) for answer in answers]
            for example, label in zip(batch, labels, strict=True):
                result.add(example, label)
    finally:
        tokenizer.padding_side = padding_side
    return result


def world_ablation_report(
    model: TheWorld, processor: TheWorldProcessor, examples: Sequence[VSRExample], **kwargs
) -> dict[str, Any]:
    """The same split with the world path on and ablated, so every result shows whether the world mattered."""
    world = evaluate_vsr(model, processor, examples, **kwargs)
    ablated = evaluate_vsr(model, processor, examples, ablate_world=True, **kwargs)
    return {
        "examples": len(examples),
        "world": world.to_dict(),
        "world_ablated": ablated.to_dict(),
        "world_gain": world.overall.accuracy - ablated.overall.accuracy,
        "answers_changed_by_ablation": sum(
            a != b for a, b in zip(world.predictions, ablated.predictions, strict=True)
        ),
    }


def markdown_report(reports: dict[str, dict[str, Any]]) -> str:
    """A readable table per evaluated split: overall, meta-categories and relations, world on vs ablated."""
    lines = []
    for split, report in reports.items():
        world, ablated = report["world"], report["world_ablated"]
        rows = [["**overall**", world["total"], f"{world['accuracy']:.1%}", f"{ablated['accuracy']:.1%}"]]
        for section in ("per_meta_category", "per_relation"):
            for name, score in world[section].items():
                off = ablated[section][name]
                rows.append([name, score["total"], f"{score['accuracy']:.1%}", f"{off['accuracy']:.1%}"])
        lines += [
            f"### {split} ({report['examples']} examples)",
            "",
            markdown_table(["group", "n", "world on", "world ablated"], rows, numeric=3),
        ]
        lines += [
            "",
            f"Unparsed answers (counted as wrong): {world['unparsed']} with the world on, {ablated['unparsed']} "
            f"ablated. Answers changed by the ablation: {report['answers_changed_by_ablation']}.",
            "",
        ]
    return "\n".join(lines)


def write_reports(reports: dict[str, dict[str, Any]], output: str | os.PathLike) -> tuple[Path, Path]:
    """Writes the JSON report and, beside it, the Markdown table; returns both paths."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(reports, indent=2) + "\n")
    markdown = output.with_suffix(".md")
    markdown.write_text(markdown_report(reports))
    return output, markdown


__all__ = [
    "EvalResult",
    "EvaluationConfig",
    "Score",
    "evaluate_vsr",
    "markdown_report",
    "world_ablation_report",
    "write_reports",
]
