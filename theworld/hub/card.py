"""The model card of a TheWorld checkpoint, generated from what is known: config, weights header, code, run files."""

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..markdown import markdown_table
from ..prompt import ANSWER_BY_LOSS, ANSWERS, QUESTION_TEMPLATE
from .files import (
    HISTORY_NAME,
    REMOTE_CODE_FILES,
    TRAINING_CONFIG_NAME,
    LocalCheckpoint,
    read_json,
    remote_code_digests,
)
from .info import CheckpointInfo, read_info

# Where the remote code comes from: `save_pretrained` copies this package's files.
PACKAGE = Path(__file__).resolve().parents[1]
GEMMA_LICENSE = "[Gemma Terms of Use](https://ai.google.dev/gemma/terms)"
COSMOS_LICENSE = "[NVIDIA Open Model License](https://www.nvidia.com/en-us/agreements/enterprise-software/nvidia-open-model-license/)"
# World-encoder repositories whose license the card can name; others: "the license of its repository".
WORLD_ENCODER_LICENSES = {"nvidia/Cosmos-Predict2-2B-Video2World": COSMOS_LICENSE}
TAGS = ["theworld", "gemma3", "world-model", "spatial-reasoning", "vision-language"]
# `training_config.json` entries shown in the card, when the run used them.
TRAINING_SETTINGS = (
    "epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "weight_decay",
    "lr_scheduler",
    "warmup_steps",
    "seed",
    "dtype",
    "mixed_precision",
    "use_latent_cache",
    "answer_loss",
)
LORA_SETTINGS = ("lora_rank", "lora_alpha", "lora_target_modules")
DESCRIBE_SETTINGS = ("describe_steps", "describe_learning_rate", "freeze_world_projector")
EXAMPLE_CAPTION = "The cat is to the left of the dog."
MAX_NEW_TOKENS = 8

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A fine-tuned **TheWorld**: the frozen Gemma 3 vision-language model also sees each image through a frozen world
encoder, {{ info.world_encoder() }}, joined by small trained projections. This repository holds only the trained part
({{ "{:,}".format(info.trainable_parameters) }} parameters, {{ "{:,}".format(info.weights_bytes) }} bytes of
safetensors); `from_pretrained` loads both bases from their own repositories at the commits pinned in `config.json`.

## Bases

{{ bases }}

## Trained part

- {{ info.world_layout() }}.
{% for part in info.trainable_parts() %}- {{ part | e }}
{% endfor %}
{%- if training %}
## Training

{{ training }}
{% endif %}
{%- if results %}
## Evaluation

Accuracy on VSR-format true/false questions, with the world path on and **ablated** (the world tokens zeroed, the
placeholders kept): the gain is what the world encoder's view contributes.

{{ results }}
{% for split, table in categories %}
Per meta-category, {{ split }}:

{{ table }}
{% endfor %}
{%- endif %}
## Usage

Needs `transformers`, `diffusers`{{ ", `peft`" if info.config.lora_config }} and `torch`, not the `theworld` package.

```python
{{ usage }}
```

## Remote code

`trust_remote_code=True` runs the {{ code_count }} Python files of this repository (they import only torch,
transformers, diffusers, numpy and PIL). Their sha256:

{{ code }}

Combined: `{{ info.code_hash }}`, which is what `sha256sum {{ code_files }} | sha256sum` prints in a clone. To run
exactly the code you reviewed, pin the commit: `from_pretrained(..., trust_remote_code=True, revision="<commit>")`.

## License

The frozen bases keep their licenses, and using this model means accepting both: Gemma 3 is under the
{{ gemma_license }}, the world encoder under {{ world_encoder_license }}.
"""


def build_model_card(
    checkpoint: str | os.PathLike,
    repo_id: str,
    *,
    evaluation: dict[str, Any] | None = None,
    dataset: str | None = None,
    tags: list[str] | None = None,
    run_files_beside: bool = True,
    code_folder: str | os.PathLike | None = None,
) -> ModelCard:
    """The card of the checkpoint folder `checkpoint`, to be published as `repo_id`.

    `evaluation` is a `theworld eval` report (default: the checkpoint's `eval.json`, or the one beside it);
    `dataset` the Hub id of the training data (e.g. `cambridgeltl/vsr_random`). The training settings come from the
    `training_config.json` and `history.json` of the run, if found. The code hashed is the checkpoint's, or that in
    `code_folder`.
    """
    files = LocalCheckpoint(checkpoint, run_files_beside=run_files_beside)
    info = read_info(files, evaluation)
    if code_folder is not None:
        info = replace(info, code_digests=remote_code_digests(lambda name: Path(code_folder, name).read_bytes()))
    model_name = repo_id.split("/")[-1]
    training = read_json(files, TRAINING_CONFIG_NAME)
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=[name for name, commit in info.bases().values() if commit is not None] or None,
        datasets=[dataset] if dataset else None,
        tags=TAGS
        + [info.config.world_encoder_type]
        + (["lora"] if info.config.lora_config else [])
        + [tag for tag in tags or [] if tag not in TAGS],
        license="other",
        license_name="gemma-terms-and-world-encoder-license",
        eval_results=eval_results(info, dataset) or None,
    )
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE,
        model_name=model_name,
        info=info,
        bases=bases_table(info),
        training=training_table(training, read_json(files, HISTORY_NAME)),
        results=results_table(info),
        categories=category_tables(info.evaluation or {}),
        usage=usage_snippet(repo_id, run_answer_by(training)),
        code=markdown_table(["file", "sha256"], [[f"`{n}`", f"`{d}`"] for n, d in info.code_digests.items()]),
        code_files=" ".join(REMOTE_CODE_FILES),
        code_count=len(REMOTE_CODE_FILES),
        gemma_license=GEMMA_LICENSE,
        world_encoder_license=world_encoder_license(info),
    )


def model_card_text(folder: str | os.PathLike, repo_id: str, tags: list[str] | None = None) -> str:
    """README.md for `model.push_to_hub`, which saved the model to the fresh `folder` (no run files beside it).

    The model's folder lacks processing_theworld.py, which `processor.push_to_hub` brings; both copy this package's
    files, so the code hashed is the package's own.
    """
    return str(build_model_card(folder, repo_id, tags=tags, run_files_beside=False, code_folder=PACKAGE))


def bases_table(info: CheckpointInfo) -> str:
    """The two frozen bases with their pinned commits and licenses."""
    bases = info.bases()
    (gemma, gemma_commit), (encoder, encoder_commit) = bases["gemma"], bases["world encoder"]
    subfolder = info.config.world_encoder_subfolder
    rows = [
        ["Gemma 3 (frozen)", f"`{gemma}`", f"`{gemma_commit or 'unpinned'}`", GEMMA_LICENSE],
        [
            f"world encoder: {info.world_encoder()} (frozen{f', `{subfolder}/` only' if subfolder else ''})",
            f"`{encoder}`",
            f"`{encoder_commit or 'unpinned'}`",
            world_encoder_license(info),
        ],
    ]
    return markdown_table(["base", "repository", "pinned commit", "license"], rows)


def world_encoder_license(info: CheckpointInfo) -> str:
    location = info.config.world_encoder_name_or_path
    return WORLD_ENCODER_LICENSES.get(location, f"the license of `{location}`")


def results_table(info: CheckpointInfo) -> str:
    """Overall accuracy per split, world on and ablated; empty without an evaluation."""
    rows = [
        [r.split, r.examples, f"{r.world:.1%}", f"{r.ablated:.1%}", f"{r.gain * 100:+.1f} points"]
        for r in info.results()
    ]
    return markdown_table(["split", "examples", "world on", "world ablated", "gain"], rows, numeric=4) if rows else ""


def category_tables(evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    """Per split: the accuracy per VSR meta-category, world on and ablated."""
    tables = []
    for split, report in evaluation.items():
        ablated = report["world_ablated"]["per_meta_category"]
        rows = [
            [name, score["total"], f"{score['accuracy']:.1%}", f"{ablated[name]['accuracy']:.1%}"]
            for name, score in report["world"]["per_meta_category"].items()
        ]
        tables.append((split, markdown_table(["category", "examples", "world on", "world ablated"], rows, numeric=3)))
    return tables


def training_table(training: dict[str, Any] | None, history: dict[str, list] | None) -> str:
    """The settings of a run (`training_config.json`) and how far it went (`history.json`); empty without them."""
    if training is None:
        return ""
    names = TRAINING_SETTINGS + (LORA_SETTINGS if training.get("lora_rank") else ())
    names += DESCRIBE_SETTINGS if training.get("describe_steps") else ()
    rows = [[name, training[name]] for name in names if training.get(name) is not None]
    losses = (history or {}).get("loss") or []
    if losses:
        rows += [["steps run", losses[-1][0]], ["final training loss", f"{losses[-1][1]:.4f}"]]
    return markdown_table(["setting", "value"], rows)


def eval_results(info: CheckpointInfo, dataset: str | None) -> list[EvalResult]:
    """`model-index` entries: per split, the accuracy with the world path on and ablated."""
    results = []
    for result in info.results():
        for name, value in (("world on", result.world), ("world ablated", result.ablated)):
            results.append(
                EvalResult(
                    task_type="image-text-to-text",
                    task_name="Visual spatial reasoning",
                    dataset_type=dataset or "vsr-format",
                    dataset_name=dataset or "VSR-format data",
                    dataset_split=result.split,
                    metric_type="accuracy",
                    metric_name=f"accuracy ({name})",
                    metric_value=round(value, 4),
                )
            )
    return results


def example_question() -> str:
    """The usage example's question, in the prompt format of `theworld train`."""
    return QUESTION_TEMPLATE.format(caption=EXAMPLE_CAPTION)


def run_answer_by(training: dict[str, Any] | None) -> str:
    """How the run's model answers ("generation" or "choices"), by the answer loss it trained with."""
    return ANSWER_BY_LOSS[(training or {}).get("answer_loss", "tokens")]


def usage_snippet(repo_id: str, answer_by: str = "generation") -> str:
    """Python that loads the model with transformers alone and answers one question in the training prompt format:
    generated, or for a model trained with the choice loss the answer whose first token scores higher."""
    imports = ""
    if answer_by == "choices":
        imports = "import torch\n"
        answer = f"""answers = {list(ANSWERS)!r}  # trained to choose between their first tokens, not to generate
first_tokens = [processor.tokenizer.encode(answer, add_special_tokens=False)[0] for answer in answers]
with torch.no_grad():
    logits = model(**inputs, logits_to_keep=1).logits[0, -1]
print(answers[int(logits[first_tokens].argmax())])"""
    else:
        answer = f"""output = model.generate(**inputs, max_new_tokens={MAX_NEW_TOKENS}, do_sample=False)
print(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))"""
    return f"""{imports}from PIL import Image
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)

image = Image.open("photo.jpg").convert("RGB")
question = {example_question()!r}
messages = [{{"role": "user", "content": [{{"type": "image", "image": image}}, {{"type": "text", "text": question}}]}}]
inputs = processor.apply_chat_template(
    messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
)
{answer}"""
