"""The one VSR prompt format, shared by training, evaluation, the demo and the model card."""

import re
from typing import Any

QUESTION_TEMPLATE = 'Is this statement about the image true or false? "{caption}" Answer True or False.'
ANSWERS = ("False", "True")  # indexed by the VSR label: 0 = false, 1 = true
END_OF_TURN = "<end_of_turn>"
# How a model answers ("generation" or "choices"), by the answer loss it trained with ("tokens" or "choices"): nothing
# trains what a model trained with the choice loss generates.
ANSWER_BY_LOSS = {"tokens": "generation", "choices": "choices"}


def vsr_messages(caption: str) -> list[dict[str, Any]]:
    """The chat of one VSR question: one image, then the question about the caption."""
    text = QUESTION_TEMPLATE.format(caption=caption)
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def vsr_prompt(processor: Any, caption: str) -> str:
    """The prompt text up to where the model's answer starts (chat template with the generation prompt)."""
    return processor.apply_chat_template(vsr_messages(caption), add_generation_prompt=True, tokenize=False)


def vsr_inputs(processor: Any, captions: list[str], images: list[Any], **kwargs: Any) -> Any:
    """Model inputs for a batch of VSR questions, one image each (the chat template already holds `<bos>`)."""
    prompts = [vsr_prompt(processor, caption) for caption in captions]
    return processor(
        text=prompts, images=[[image] for image in images], add_special_tokens=False, return_tensors="pt", **kwargs
    )


def answer_token_ids(tokenizer: Any) -> list[int]:
    """The first token of each answer, indexed by label; the two must differ for the answers to be told apart."""
    token_ids = [tokenizer.encode(answer, add_special_tokens=False)[0] for answer in ANSWERS]
    if len(set(token_ids)) != len(token_ids):
        raise ValueError(f"The tokenizer starts the answers {ANSWERS} with the same token")
    return token_ids


def answer_text(label: int) -> str:
    """The target the model learns to produce for a label, closing its turn."""
    return ANSWERS[label] + END_OF_TURN


def parse_answer(text: str) -> int | None:
    """The label an answer states (1 for "True", 0 for "False"), or None if it states neither."""
    match = re.match(r"\W*(true|false)\b", text, flags=re.IGNORECASE)
    if match is None:
        return None
    return int(match.group(1).lower() == "true")
