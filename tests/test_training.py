"""Fine-tuning: answer-only loss, latent cache, determinism, resume after a kill, atomic saves, LoRA, multi-process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from world_inputs import perturb_trainable

from theworld import TheWorld, TheWorldProcessor
from theworld.cli import main
from theworld.data import load_vsr_split, synthesize_vsr
from theworld.prompt import answer_text, answer_token_ids, parse_answer
from theworld.training import TrainingConfig, WorldLatentCache, save_checkpoint, train
from theworld.training.choice_loss import answer_choice_loss
from theworld.training.collation import VSRCollator, VSRTrainingDataset, encode_vsr_example

TINY_RECIPE = {"world_image_size": 64, "world_grid_size": 1, "batch_size": 4, "learning_rate": 1e-2, "progress": False}


@pytest.fixture(scope="module")
def vsr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize_vsr(tmp_path_factory.mktemp("vsr"), seed=0, n_train=24, n_dev=8, n_test=8)


def training_config(tiny_bases, vsr_dir: Path, output_dir: Path, **overrides) -> TrainingConfig:
    settings = {**TINY_RECIPE, "max_steps": 4, "save_every": 2, **overrides}
    return TrainingConfig(
        gemma=str(tiny_bases.gemma),
        world_encoder_path=str(tiny_bases.cosmos),
        data_dir=vsr_dir,
        output_dir=output_dir,
        **settings,
    )


def train_command(tiny_bases, vsr_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        *("--gemma", str(tiny_bases.gemma), "--cosmos", str(tiny_bases.cosmos)),
        *("--data", str(vsr_dir), "--output-dir", str(output_dir)),
        *("--world-image-size", "64", "--world-grid-size", "1", "--batch-size", "4", "--learning-rate", "0.01"),
        "--no-progress",
        *extra,
    ]


def test_loss_falls_only_on_answer_tokens(make_world, vsr_dir):
    model, processor = make_world(world_grid_size=1)
    example = load_vsr_split(vsr_dir / "train.jsonl", vsr_dir / "images").examples[0]
    encoded = encode_vsr_example(processor, example)
    answer_ids = processor.tokenizer(answer_text(example.label), add_special_tokens=False).input_ids
    labelled = encoded["labels"] != -100
    assert encoded["labels"][labelled].tolist() == answer_ids
    assert labelled.nonzero().flatten().tolist() == list(range(len(labelled) - len(answer_ids), len(labelled)))
    assert encoded["input_ids"][-len(answer_ids) :].tolist() == answer_ids
    # One <bos> only: the chat template holds it.
    assert (encoded["input_ids"] == processor.tokenizer.bos_token_id).sum() == 1


def test_choice_loss_is_the_two_way_cross_entropy_where_each_answer_starts(make_world, vsr_dir):
    model, processor = make_world(world_grid_size=1)
    perturb_trainable(model, seed=1)
    examples = load_vsr_split(vsr_dir / "train.jsonl", vsr_dir / "images").examples
    chosen = [next(e for e in examples if e.label == label) for label in (0, 1)] + examples[:2]
    batch = VSRCollator(processor.tokenizer.pad_token_id)([encode_vsr_example(processor, e) for e in chosen])
    answer_ids = torch.tensor(answer_token_ids(processor.tokenizer))
    with torch.no_grad():
        loss = answer_choice_loss(model, batch, answer_ids)
        logits = model(**{name: value for name, value in batch.items() if name != "labels"}).logits
    expected = []
    for row in range(len(chosen)):
        answer_start = int((batch["labels"][row] != -100).nonzero()[0])  # rows differ in length: padded on the right
        expected.append(logits[row, answer_start - 1, answer_ids])
    labels = torch.tensor([example.label for example in chosen])
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(torch.stack(expected), labels))
    batch["labels"][0, batch["labels"][0] != -100] = processor.tokenizer.eos_token_id
    with pytest.raises(ValueError, match="none of the answer tokens"):
        answer_choice_loss(model, batch, answer_ids)


def test_training_with_the_choice_loss_optimises_it(tiny_bases, vsr_dir, tmp_path):
    runs = {
        answer_loss: train(training_config(tiny_bases, vsr_dir, tmp_path / answer_loss, answer_loss=answer_loss))
        for answer_loss in ("tokens", "choices")
    }
    # Same seed, same batches: only the loss differs, so the recorded losses and the trained weights do too.
    first_losses = {name: run.history["loss"][0][1] for name, run in runs.items()}
    assert first_losses["tokens"] != pytest.approx(first_losses["choices"])
    weights = {name: load_file(run.checkpoint / "model.safetensors") for name, run in runs.items()}
    assert weights["tokens"].keys() == weights["choices"].keys()
    assert any(not torch.equal(weights["tokens"][key], weights["choices"][key]) for key in weights["tokens"])
    assert json.loads((tmp_path / "choices" / "training_config.json").read_text())["answer_loss"] == "choices"


def test_parse_answer():
    assert parse_answer("True") == 1
    assert parse_answer(" false.") == 0
    assert parse_answer("Truely") is None
    assert parse_answer("maybe") is None


def test_latent_cache_matches_live_vae_and_is_keyed(make_world, vsr_dir, tmp_path, monkeypatch):
    model, processor = make_world(world_grid_size=1)
    examples = load_vsr_split(vsr_dir / "train.jsonl", vsr_dir / "images").examples[:4]
    cache = WorldLatentCache(tmp_path / "cache", model, processor)
    assert cache.fill([example.image_path for example in examples], progress=False) == 4
    collator = VSRCollator(processor.tokenizer.pad_token_id)
    live = collator([VSRTrainingDataset(examples, processor)[i] for i in range(4)])
    cached = collator([VSRTrainingDataset(examples, processor, cache)[i] for i in range(4)])
    assert "world_latents" in cached and "world_pixel_values" not in cached
    torch.testing.assert_close(model(**cached).loss, model(**live).loss)

    # A second cache over the same files reads from disk: the VAE never runs.
    monkeypatch.setattr(model, "encode_world", lambda *args: pytest.fail("VAE ran on a cached image"))
    again = WorldLatentCache(tmp_path / "cache", model, processor)
    assert again.fill([example.image_path for example in examples], progress=False) == 0
    monkeypatch.undo()

    # Another image, other VAE weights or another preprocessing give other keys.
    changed = tmp_path / "changed.jpg"
    shutil.copy(examples[0].image_path, changed)
    changed.write_bytes(changed.read_bytes() + b"\0")
    assert cache.key(changed) != cache.key(examples[0].image_path)
    with torch.no_grad():
        next(model.world_encoder.parameters()).add_(1e-3)
    assert WorldLatentCache(tmp_path / "cache", model, processor).fingerprint != cache.fingerprint
    processor.world_image_size = 128
    assert WorldLatentCache(tmp_path / "cache", model, processor).fingerprint != cache.fingerprint


def test_same_seed_same_weights_and_curves(tiny_bases, vsr_dir, tmp_path):
    first = train(training_config(tiny_bases, vsr_dir, tmp_path / "a", eval_every=2))
    second = train(training_config(tiny_bases, vsr_dir, tmp_path / "b", eval_every=2))
    weights_a = load_file(first.checkpoint / "model.safetensors")
    weights_b = load_file(second.checkpoint / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(weights_a[name], weights_b[name], rtol=0, atol=0)
    assert first.history == second.history
    assert len(first.history["loss"]) == 4 and len(first.history["dev_accuracy"]) == 2
    assert (tmp_path / "a" / "loss.png").stat().st_size > 0 and (tmp_path / "a" / "accuracy.png").exists()
    initial = load_file(first.checkpoint.parent / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert any(not torch.equal(initial[name], weights_a[name]) for name in weights_a), "training changed nothing"


def test_gradient_checkpointing_trains_the_same_weights(tiny_bases, vsr_dir, tmp_path):
    """`theworld train --gradient-checkpointing`: the same run, with activations recomputed in the backward pass."""
    for name, extra in (("plain", []), ("checkpointed", ["--gradient-checkpointing"])):
        assert main(["train", *train_command(tiny_bases, vsr_dir, tmp_path / name, "--max-steps", "3", *extra)]) == 0
    assert json.loads((tmp_path / "checkpointed" / "training_config.json").read_text())["gradient_checkpointing"]
    weights = load_file(tmp_path / "checkpointed" / "checkpoint" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "plain" / "checkpoint" / "model.safetensors").items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_kill_and_resume_continues_from_last_step(tiny_bases, vsr_dir, tmp_path):
    reference = train(training_config(tiny_bases, vsr_dir, tmp_path / "reference", max_steps=8))

    output_dir = tmp_path / "interrupted"
    command = [sys.executable, "-m", "theworld.cli", "train", *train_command(tiny_bases, vsr_dir, output_dir)]
    command += ["--max-steps", "8", "--save-every", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = output_dir / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-4").exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint-4 within 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output_dir / "checkpoint").exists(), "killed too late to test resuming"

    resumed = train(training_config(tiny_bases, vsr_dir, output_dir, max_steps=8))
    assert resumed.steps == 8
    assert [step for step, _ in resumed.history["loss"]] == list(range(1, 9))
    expected = load_file(reference.checkpoint / "model.safetensors")
    actual = load_file(resumed.checkpoint / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        torch.tensor([loss for _, loss in resumed.history["loss"]]),
        torch.tensor([loss for _, loss in reference.history["loss"]]),
    )


def test_failed_save_leaves_previous_checkpoint_intact(make_world, tmp_path, monkeypatch):
    model, processor = make_world(world_grid_size=1)
    target = tmp_path / "checkpoint"
    save_checkpoint(model, processor, target)
    before = {path.name: path.read_bytes() for path in target.iterdir()}

    with torch.no_grad():
        model.world_boundary_embeddings.add_(1.0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(TheWorldProcessor, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, processor, target)
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in target.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith(".")) == ["checkpoint"]

    # The next save completes and replaces it; the half-written folder is gone.
    save_checkpoint(model, processor, target)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint"]
    reloaded = TheWorld.from_pretrained(target)
    torch.testing.assert_close(reloaded.world_boundary_embeddings, model.world_boundary_embeddings)


def test_lora_checkpoint_loads_back_in_one_call(tiny_bases, vsr_dir, tmp_path):
    result = train(training_config(tiny_bases, vsr_dir, tmp_path / "lora", lora_rank=4, max_steps=2))
    weights = load_file(result.checkpoint / "model.safetensors")
    lora_keys = [name for name in weights if "lora_" in name]
    assert lora_keys and all(name.startswith("gemma.model.language_model.") for name in lora_keys)
    assert any(name.startswith("world_projector.") for name in weights)
    model = TheWorld.from_pretrained(result.checkpoint)
    assert model.config.lora_config["r"] == 4
    parameters = dict(model.named_parameters())
    for name, tensor in weights.items():
        torch.testing.assert_close(parameters[name].detach(), tensor)
    assert not any("vision_tower" in name and "lora_" in name for name in parameters)


def test_unfreezing_option_trains_and_saves_that_part(tiny_bases, vsr_dir, tmp_path):
    result = train(training_config(tiny_bases, vsr_dir, tmp_path / "mmp", train_multi_modal_projector=True))
    weights = load_file(result.checkpoint / "model.safetensors")
    assert any(name.startswith("gemma.model.multi_modal_projector.") for name in weights)
    assert not any(name.startswith("gemma.model.language_model.") for name in weights)


def test_two_process_training_with_accelerate(tiny_bases, vsr_dir, tmp_path):
    output_dir = tmp_path / "ddp"
    command = ["accelerate", "launch", "--cpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "theworld.cli", "train"]
    command += [*train_command(tiny_bases, vsr_dir, output_dir), "--max-steps", "2", "--save-every", "1"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    history = json.loads((output_dir / "history.json").read_text())
    assert [step for step, _ in history["loss"]] == [1, 2]
    model = TheWorld.from_pretrained(output_dir / "checkpoint")
    assert torch.isfinite(model.world_boundary_embeddings).all()
