"""TheWorldProcessor: the Gemma 3 processor plus the world view of each image and its world-token placeholders."""

import os

import numpy as np
import torch
from PIL import Image
from transformers import Gemma3Processor
from transformers.image_transforms import to_pil_image
from transformers.image_utils import ImageInput, make_flat_list_of_images

from .configuration_theworld import WORLD_END_TOKEN, WORLD_START_TOKEN, WORLD_TOKEN, TheWorldConfig, add_world_tokens


class TheWorldProcessor(Gemma3Processor):
    r"""
    Wraps [`Gemma3Processor`]. Each image becomes Gemma's image sequence followed by
    `<start_of_world>` + `num_world_tokens` x `<world_soft_token>` + `<end_of_world>`, and its world view
    (`world_pixel_values`: RGB, `world_image_size` square, values in [-1, 1]) is returned beside `pixel_values`.

    Args:
        num_world_tokens (`int`, defaults to 256): world tokens per image (`TheWorldConfig.num_world_tokens`).
        world_image_size (`int`, defaults to 512): side of the world view in pixels.
        enable_world (`bool`, defaults to `True`): with `False` this is exactly the Gemma 3 processor.
    """

    def __init__(
        self,
        image_processor,
        tokenizer,
        chat_template: str | None = None,
        image_seq_length: int = 256,
        num_world_tokens: int = 256,
        world_image_size: int = 512,
        enable_world: bool = True,
        **kwargs,
    ):
        token_ids = add_world_tokens(tokenizer)
        self.num_world_tokens = num_world_tokens
        self.world_image_size = world_image_size
        self.enable_world = enable_world
        self.world_token = WORLD_TOKEN
        self.world_token_id = token_ids[WORLD_TOKEN]
        self.full_world_sequence = f"{WORLD_START_TOKEN}{WORLD_TOKEN * num_world_tokens}{WORLD_END_TOKEN}"
        super().__init__(
            image_processor, tokenizer, chat_template=chat_template, image_seq_length=image_seq_length, **kwargs
        )

    @classmethod
    def from_model_config(cls, config: TheWorldConfig, **kwargs) -> "TheWorldProcessor":
        """The processor matching a `TheWorldConfig`, built from the Gemma 3 processor of its base."""
        gemma_processor = Gemma3Processor.from_pretrained(
            config.gemma_model_name_or_path, revision=config.gemma_revision, **kwargs
        )
        processor = cls(
            gemma_processor.image_processor,
            gemma_processor.tokenizer,
            chat_template=gemma_processor.chat_template,
            image_seq_length=gemma_processor.image_seq_length,
            num_world_tokens=config.num_world_tokens,
            world_image_size=config.world_image_size,
            enable_world=config.enable_world,
        )
        if processor.world_token_id != config.world_token_id:
            raise ValueError(
                f"The tokenizer of {config.gemma_model_name_or_path!r} gives {WORLD_TOKEN} id "
                f"{processor.world_token_id}, the model expects {config.world_token_id}: tokenizer and model come "
                "from different bases."
            )
        return processor

    def preprocess_world_images(self, images: ImageInput) -> torch.Tensor:
        """World view of each image: RGB, resized to a square, in [-1, 1]: (num_images, 3, size, size) float32."""
        size = self.world_image_size
        arrays = []
        for image in make_flat_list_of_images(images):
            if not isinstance(image, Image.Image):
                image = to_pil_image(image)
            image = image.convert("RGB").resize((size, size), resample=Image.Resampling.BICUBIC)
            arrays.append(np.asarray(image, dtype=np.float32))
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (n, 3, size, size) in [0, 255]
        return pixels / 127.5 - 1.0

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        sequence = super().replace_image_token(image_inputs, image_idx, **kwargs)
        return sequence + self.full_world_sequence if self.enable_world else sequence

    def _process_images(self, images: ImageInput, **kwargs):
        processed_images, replacements = super()._process_images(images, **kwargs)
        if self.enable_world:
            processed_images["world_pixel_values"] = self.preprocess_world_images(images)
        return processed_images, replacements

    def validate_inputs(self, images=None, text=None, **kwargs):
        super().validate_inputs(images=images, text=text, **kwargs)
        if text is not None and any(self.world_token in sample for sample in text):
            raise ValueError(
                f"The text already holds {self.world_token} placeholders; pass text with one {self.boi_token} per "
                "image and let the processor add the world tokens."
            )

    @property
    def model_input_names(self) -> list[str]:
        names = super().model_input_names
        return names + ["world_pixel_values"] if self.enable_world else names

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        self.register_for_auto_class()
        return super().save_pretrained(save_directory, **kwargs)


__all__ = ["TheWorldProcessor"]
