"""VSR examples as model inputs: prompt + answer tokens with loss on the answer only, and batch collation."""

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..data import VSRExample, load_image
from ..processing_theworld import TheWorldProcessor
from ..prompt import answer_text, vsr_inputs
from .latent_cache import WorldLatentCache

IGNORE_INDEX = -100


def encode_vsr_example(processor: TheWorldProcessor, example: VSRExample) -> dict[str, torch.Tensor]:
    """Prompt and answer of one example; `labels` is -100 everywhere but on the answer tokens."""
    prompt_inputs = vsr_inputs(processor, [example.caption], [load_image(example.image_path)])
    answer_ids = processor.tokenizer(
        answer_text(example.label), add_special_tokens=False, return_tensors="pt"
    ).input_ids[0]
    prompt_ids = prompt_inputs["input_ids"][0]
    encoded = {
        "input_ids": torch.cat([prompt_ids, answer_ids]),
        "labels": torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), answer_ids]),
        "token_type_ids": torch.cat([prompt_inputs["token_type_ids"][0], torch.zeros_like(answer_ids)]),
        "pixel_values": prompt_inputs["pixel_values"],
    }
    if "world_pixel_values" in prompt_inputs:
        encoded["world_pixel_values"] = prompt_inputs["world_pixel_values"]
    return encoded


class VSRTrainingDataset(Dataset):
    """Encoded VSR examples; with a latent cache, world latents replace world pixels."""

    def __init__(
        self,
        examples: Sequence[VSRExample],
        processor: TheWorldProcessor,
        latent_cache: WorldLatentCache | None = None,
    ):
        self.examples = list(examples)
        self.processor = processor
        self.latent_cache = latent_cache

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = self.examples[index]
        encoded = encode_vsr_example(self.processor, example)
        if self.latent_cache is not None and "world_pixel_values" in encoded:
            del encoded["world_pixel_values"]
            encoded["world_latents"] = self.latent_cache.get(example.image_path).unsqueeze(0)
        return encoded


class VSRCollator:
    """Right-pads token tensors (labels with -100) and concatenates the per-image tensors."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(len(feature["input_ids"]) for feature in features)
        padding = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX, "token_type_ids": 0}
        batch = {
            name: torch.stack(
                [torch.nn.functional.pad(f[name], (0, length - len(f[name])), value=value) for f in features]
            )
            for name, value in padding.items()
        }
        batch["attention_mask"] = torch.stack(
            [torch.arange(length) < len(feature["input_ids"]) for feature in features]
        ).long()
        for name in ("pixel_values", "world_pixel_values", "world_latents"):
            if name in features[0]:
                batch[name] = torch.cat([feature[name] for feature in features])
        return batch
