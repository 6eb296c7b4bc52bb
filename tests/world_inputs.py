"""Inputs shared by the core model tests: deterministic images, chat prompts and a 'trained' projector."""

import numpy as np
import torch
from PIL import Image

from theworld.hub.files import REMOTE_CODE_FILES

# What a checkpoint folder holds. The processor's image settings live inside processor_config.json (transformers 5
# writes no separate preprocessor_config.json), the chat template in chat_template.jinja.
CHECKPOINT_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    *REMOTE_CODE_FILES,
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
}

QUESTION = "Is the red circle left of the blue square?"
OTHER_QUESTION = "Statement: The cat is on the mat. Answer with True or False."


def make_image(seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> Image.Image:
    """A random-noise image of `size` (width, height), converted to `mode`."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def chat(text: str, num_images: int = 1) -> list[dict]:
    content = [{"type": "image"}] * num_images + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def prompt(processor, text: str = QUESTION, num_images: int = 1) -> str:
    return processor.apply_chat_template(chat(text, num_images), add_generation_prompt=True)


@torch.no_grad()
def perturb_trainable(model, seed: int = 0, std: float = 0.5) -> None:
    """Stands in for training: sets the world projector and boundary embeddings to seeded random values, large
    enough that the world tokens visibly move the logits."""
    generator = torch.Generator().manual_seed(seed)
    for _, parameter in sorted(model.trainable_state_dict().items()):
        parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
