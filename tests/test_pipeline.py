"""`pipeline("image-text-to-text", model=checkpoint, trust_remote_code=True)` with its defaults, batched, in a process
without `theworld`: the pipeline's model is the trained one, and its answers are the ones the model gives each prompt
alone."""

import json
from pathlib import Path

import torch
from fresh_process import run_fresh
from world_inputs import make_image, perturb_trainable

QUESTIONS = ["Is the red circle left of the blue square?", "Where is the cat?", "What colour is the large shape?"]
MAX_NEW_TOKENS = 6

PIPELINE_SCRIPT = """
import json, sys
sys.modules["theworld"] = None
import torch
from PIL import Image
from transformers import pipeline

folder, images, questions = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
max_new_tokens, logits_file = int(sys.argv[4]), sys.argv[5]
pipe = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
chats = [
    [{"role": "user", "content": [{"type": "image", "image": Image.open(image)}, {"type": "text", "text": question}]}]
    for image, question in zip(images, questions)
]
generate_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False}
outputs = pipe(text=chats, batch_size=len(chats), return_full_text=False, generate_kwargs=generate_kwargs)
inputs = pipe.processor.apply_chat_template(
    chats[0], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
)
with torch.no_grad():
    torch.save(pipe.model(**inputs).logits, logits_file)
answers = [output[0]["generated_text"] for output in outputs]
print(json.dumps({"answers": answers, "model": type(pipe.model).__module__, "dtype": str(pipe.model.dtype)}))
"""


def chat(image, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]


def test_the_pipeline_answers_a_batch_as_the_model_answers_each_prompt(make_world, tmp_path: Path):
    torch.manual_seed(0)
    model, processor = make_world()
    perturb_trainable(model, seed=9)
    model.save_pretrained(tmp_path / "checkpoint")
    processor.save_pretrained(tmp_path / "checkpoint")
    images = [make_image(30 + index, size=(40 + 9 * index, 52)) for index in range(len(QUESTIONS))]
    for index, image in enumerate(images):
        image.save(tmp_path / f"image-{index}.png")
    expected, first_logits = [], None
    for image, question in zip(images, QUESTIONS, strict=True):
        inputs = processor.apply_chat_template(
            chat(image, question), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            first_logits = model(**inputs).logits if first_logits is None else first_logits
        generated = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        expected.append(processor.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))

    arguments = [str(tmp_path / "checkpoint"), json.dumps([str(tmp_path / f"image-{i}.png") for i in range(3)])]
    arguments += [json.dumps(QUESTIONS), str(MAX_NEW_TOKENS), str(tmp_path / "logits.pt")]
    report = json.loads(run_fresh(PIPELINE_SCRIPT, *arguments, cwd=tmp_path).strip().splitlines()[-1])
    assert report["model"].startswith("transformers_modules.")
    # The pipeline passes dtype="auto": each base in its stored dtype, float32 for the tiny bases.
    assert report["dtype"] == "torch.float32"
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), first_logits, rtol=0, atol=1e-6)
    assert report["answers"] == expected
