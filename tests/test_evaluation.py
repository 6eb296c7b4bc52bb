"""Evaluation on a hand-written file in the real VSR format, through the `theworld eval` command."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from world_inputs import perturb_trainable

from theworld.cli import main
from theworld.data import VSRExample, load_image, load_vsr_split, meta_category
from theworld.prompt import answer_token_ids, vsr_inputs
from theworld.training import evaluate_vsr, save_checkpoint
from theworld.training.evaluate import EvalResult

# Rows as they appear in the real VSR files: COCO names, validator lists stored as strings, extra fields.
ROWS = [
    {"image": "000000085637.jpg", "caption": "The umbrella is under the dog.", "label": 1, "relation": "under"},
    {"image": "000000213221.jpg", "caption": "The cat is left of the laptop.", "label": 0, "relation": "left of"},
    {"image": "000000330458.jpg", "caption": "The cup is on top of the table.", "label": 1, "relation": "on top of"},
    {
        "image": "000000085637.jpg",
        "caption": "The dog is far away from the umbrella.",
        "label": 0,
        "relation": "far away from",
    },
    {"image": "000000497579.jpg", "caption": "The person is facing the horse.", "label": 1, "relation": "facing"},
    {"image": "000000213221.jpg", "caption": "The laptop is among the books.", "label": 1, "relation": "among"},
]
IMAGES = {  # name: (mode, size)
    "000000085637.jpg": ("RGB", (640, 427)),
    "000000213221.jpg": ("L", (333, 517)),
    "000000330458.jpg": ("CMYK", (500, 375)),
    "000000497579.jpg": ("RGB", (37, 91)),
}


def write_vsr_file(directory: Path, rows: list[dict]) -> Path:
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name, (mode, size) in IMAGES.items():
        Image.new(mode, size, color=120 if mode == "L" else None).save(images / name, quality=90)
    path = directory / "test.jsonl"
    with path.open("w") as file:
        for index, row in enumerate(rows):
            full = {
                "image": row["image"],
                "image_link": f"http://images.cocodataset.org/train2017/{row['image']}",
                "caption": row["caption"],
                "label": row["label"],
                "relation": row["relation"],
                "annotator_id": 31 + index,
                "vote_true_validator_id": "[2, 9]",
                "vote_false_validator_id": "[]",
                "subj": "dog",
                "obj": "umbrella",
                "reference_frame": None,
            }
            file.write(json.dumps(full) + "\n")
    return path


@pytest.fixture()
def checkpoint(make_world, tmp_path: Path) -> Path:
    model, processor = make_world(world_grid_size=1)
    return save_checkpoint(model, processor, tmp_path / "checkpoint")


@pytest.mark.parametrize("answer_by", ["generation", "choices"])
def test_eval_command_reports_every_group_with_world_ablation(checkpoint, tmp_path, capsys, answer_by):
    data = write_vsr_file(tmp_path / "vsr", ROWS)
    output = tmp_path / "eval.json"
    code = main(
        ["eval", str(checkpoint), "--data", str(data), "--images", str(tmp_path / "vsr" / "images")]
        + ["--output", str(output), "--batch-size", "4", "--answer-by", answer_by]
    )
    assert code == 0
    report = json.loads(output.read_text())["test"]
    assert report["examples"] == len(ROWS)
    for key in ("world", "world_ablated"):
        result = report[key]
        assert result["total"] == len(ROWS)
        assert sum(group["total"] for group in result["per_relation"].values()) == len(ROWS)
        assert set(result["per_relation"]) == {row["relation"] for row in ROWS}
        assert set(result["per_meta_category"]) == {meta_category(row["relation"]) for row in ROWS}
        assert result["per_meta_category"]["Topological"]["total"] == 1  # "among" counted once
        assert 0 <= result["unparsed"] <= (len(ROWS) if answer_by == "generation" else 0)
        assert result["correct"] <= result["total"] - result["unparsed"]
    assert report["world_gain"] == pytest.approx(report["world"]["accuracy"] - report["world_ablated"]["accuracy"])
    markdown = output.with_suffix(".md").read_text()
    assert "world ablated" in markdown and "Orientation" in markdown
    assert "world on" in capsys.readouterr().out


def test_unparsable_answers_count_as_wrong():
    examples = [
        VSRExample(image=name, image_path=Path(name), caption="c", label=1, relation=relation)
        for name, relation in (("a.jpg", "under"), ("b.jpg", "under"), ("c.jpg", "left of"))
    ]
    result = EvalResult()
    for example, prediction in zip(examples, [1, None, 1], strict=True):
        result.add(example, prediction)
    assert (result.overall.correct, result.overall.total, result.unparsed) == (2, 3, 1)
    assert result.per_relation["under"].correct == 1 and result.per_meta_category["Projective"].total == 3


def test_bad_images_stop_or_are_skipped_and_reported(checkpoint, tmp_path, capsys):
    data = write_vsr_file(tmp_path / "vsr", ROWS)
    images = tmp_path / "vsr" / "images"
    (images / "000000330458.jpg").write_bytes((images / "000000330458.jpg").read_bytes()[:100])  # truncated
    (images / "000000497579.jpg").unlink()
    arguments = ["eval", str(checkpoint), "--data", str(data), "--images", str(images)]
    arguments += ["--output", str(tmp_path / "eval.json")]
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert "2 row(s)" in error
    assert "000000330458.jpg" in error and "000000497579.jpg" in error and "skip" in error

    assert main([*arguments, "--on-bad-image", "skip"]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())["test"]
    assert report["examples"] == len(ROWS) - 2


def test_world_path_runs_during_evaluation(make_world, tmp_path, monkeypatch):
    model, processor = make_world(world_grid_size=1)
    write_vsr_file(tmp_path / "vsr", ROWS)
    examples = load_vsr_split(tmp_path / "vsr" / "test.jsonl", tmp_path / "vsr" / "images").examples
    encoded = []
    original = model.encode_world
    monkeypatch.setattr(model, "encode_world", lambda pixels: encoded.append(len(pixels)) or original(pixels))
    evaluate_vsr(model, processor, examples, batch_size=4, progress=False)
    assert sum(encoded) == len(examples)


def test_answers_by_choice_are_the_higher_scoring_answer_token(make_world, tmp_path):
    model, processor = make_world(world_grid_size=1)
    perturb_trainable(model, seed=1)
    write_vsr_file(tmp_path / "vsr", ROWS)
    examples = load_vsr_split(tmp_path / "vsr" / "test.jsonl", tmp_path / "vsr" / "images").examples
    answer_ids = answer_token_ids(processor.tokenizer)
    for ablate_world in (False, True):
        result = evaluate_vsr(
            model, processor, examples, batch_size=4, answer_by="choices", ablate_world=ablate_world, progress=False
        )
        expected = []
        for example in examples:  # each alone: no padding
            inputs = vsr_inputs(processor, [example.caption], [load_image(example.image_path)])
            with torch.no_grad():
                logits = model(**inputs, ablate_world=ablate_world).logits[0, -1]
            expected.append(int(logits[answer_ids[1]] > logits[answer_ids[0]]))
        assert result.predictions == expected
        assert result.unparsed == 0  # a choice is always one of the answers
