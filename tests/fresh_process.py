"""Runs a script in a fresh interpreter that works offline, as a user without `theworld` installed would; loads
saved checkpoints there and brings back what they compute."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from world_inputs import prompt

from theworld import TheWorld, TheWorldProcessor


def run_fresh(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Runs `script` with HF_HUB_OFFLINE=1, its own remote-code module cache under `cwd` and nothing of the tests on
    the path (`env` adds or overrides variables); returns what it printed, or fails the test with the end of
    stderr."""
    offline = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cwd / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, **offline, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


# Runs in a fresh interpreter where `theworld` cannot be imported: loads checkpoints as any Hub user would, through
# AutoModel/AutoProcessor and the remote code shipped with them, and recomputes the logits of an image and a prompt.
# One interpreter serves every job (each checkpoint gets its own `transformers_modules` package); a failing job is
# reported, not fatal to the others.
LOAD_SCRIPT = textwrap.dedent(
    """
    import sys; sys.modules["theworld"] = None
    try:
        import theworld  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("theworld must not be importable in this process")
    import json
    import traceback
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    reports = {}
    for job in json.load(open(sys.argv[1])):
        try:
            model = AutoModel.from_pretrained(job["source"], trust_remote_code=True, **job["kwargs"])
            subfolder = job["kwargs"].get("subfolder", "")
            processor = AutoProcessor.from_pretrained(job["source"], trust_remote_code=True, subfolder=subfolder)
            inputs = processor(text=job["prompt"], images=Image.open(job["image"]), return_tensors="pt")
            with torch.no_grad():
                logits = model(**inputs).logits
            tensors = {"logits": logits, "input_ids": inputs["input_ids"]}
            tensors.update({"trained." + name: p.detach().clone() for name, p in model.trainable_state_dict().items()})
            torch.save(tensors, job["out"])
            reports[job["name"]] = {
                "model": type(model).__module__, "config": type(model.config).__module__,
                "processor": type(processor).__module__, "gemma_revision": model.config.gemma_revision,
                "world_encoder_revision": model.config.world_encoder_revision,
                "attn_implementation": model.gemma.config.get_text_config()._attn_implementation,
            }
        except Exception:
            reports[job["name"]] = {"error": traceback.format_exc()}
    loaded = [name for name, module in sys.modules.items() if name.split(".")[0] == "theworld" and module]
    print(json.dumps({"jobs": reports, "theworld_loaded": loaded}))
    """
)


@dataclass
class Checkpoint:
    """A saved checkpoint and what the process that saved it computed on one image and prompt."""

    source: str
    model: TheWorld
    processor: TheWorldProcessor
    image: Image.Image
    text: str
    input_ids: torch.Tensor
    logits: torch.Tensor
    commits: dict[str, str] = field(default_factory=dict)
    cache: Path | None = None
    load_kwargs: dict = field(default_factory=dict)  # what the fresh process passes to AutoModel.from_pretrained


def reference_logits(model, processor, image, text) -> torch.Tensor:
    inputs = processor(text=text, images=image, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


def save_checkpoint(source: str, folder: Path, model, processor, image) -> Checkpoint:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    text = prompt(processor)
    input_ids = processor(text=text, images=image, return_tensors="pt")["input_ids"]
    return Checkpoint(
        source, model, processor, image, text, input_ids, reference_logits(model, processor, image, text)
    )


def load_in_fresh_process(checkpoints: dict[str, Checkpoint], work: Path, env: dict[str, str]) -> dict[str, dict]:
    """Loads every checkpoint in one new interpreter (theworld not importable, HF_HUB_OFFLINE=1); returns, for each,
    the report of that process and the tensors it computed."""
    work.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name, checkpoint in checkpoints.items():
        image_file = work / f"{name}.png"
        checkpoint.image.save(image_file)  # PNG: the fresh process sees the same pixels
        jobs.append(
            {
                "name": name,
                "source": checkpoint.source,
                "kwargs": checkpoint.load_kwargs,
                "image": str(image_file),
                "prompt": checkpoint.text,
                "out": str(work / f"{name}.pt"),
            }
        )
    (work / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    output = json.loads(run_fresh(LOAD_SCRIPT, str(work / "jobs.json"), cwd=work, env=env).strip().splitlines()[-1])
    assert output["theworld_loaded"] == []
    loads = {}
    for job in jobs:
        report = output["jobs"][job["name"]]
        tensors = torch.load(job["out"], weights_only=True) if "error" not in report else None
        loads[job["name"]] = {"report": report, "tensors": tensors}
    return loads
