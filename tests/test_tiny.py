import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    Gemma3ForConditionalGeneration,
    Gemma3Processor,
    GemmaTokenizer,
)

from theworld.testing.tiny import make_tiny_bases


def file_hashes(directory: Path) -> dict[str, str]:
    return {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


GEMMA_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "processor_config.json",
    "preprocessor_config.json",
}
COSMOS_FILES = {"model_index.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"}
CAPTION = "The red circle is to the left of the blue square."
QUESTION = "Is this statement about the image true or false?"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return make_tiny_bases(tmp_path_factory.mktemp("bases"), seed=0)


def test_layout(bases):
    assert {p.relative_to(bases.gemma).as_posix() for p in bases.gemma.rglob("*")} == GEMMA_FILES
    assert {p.relative_to(bases.cosmos).as_posix() for p in bases.cosmos.rglob("*") if p.is_file()} == COSMOS_FILES
    config = json.loads((bases.gemma / "config.json").read_text())
    assert config["model_type"] == "gemma3"
    assert config["architectures"] == ["Gemma3ForConditionalGeneration"]
    model_index = json.loads((bases.cosmos / "model_index.json").read_text())
    assert model_index["vae"] == ["diffusers", "AutoencoderKLWan"]


def test_same_seed_same_bytes(bases, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = make_tiny_bases(tmp_path / "again", seed=0)
    assert torch.equal(torch.rand(3), expected), "building must leave the caller's random state alone"
    assert file_hashes(again.gemma) == file_hashes(bases.gemma)
    assert file_hashes(again.cosmos) == file_hashes(bases.cosmos)

    other = file_hashes(make_tiny_bases(tmp_path / "other", seed=1).gemma)
    assert other["tokenizer.json"] == file_hashes(bases.gemma)["tokenizer.json"]
    assert other["model.safetensors"] != file_hashes(bases.gemma)["model.safetensors"]


def test_tokenizer(bases):
    tokenizer = AutoTokenizer.from_pretrained(bases.gemma)
    assert isinstance(tokenizer, GemmaTokenizer)
    config = json.loads((bases.gemma / "config.json").read_text())
    ids = {
        token: tokenizer.convert_tokens_to_ids(token)
        for token in ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    }
    assert (ids["<pad>"], ids["<eos>"], ids["<bos>"], ids["<unk>"]) == (0, 1, 2, 3)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    assert config["eos_token_id"] == [ids["<eos>"], ids["<end_of_turn>"]]
    assert (tokenizer.boi_token, tokenizer.eoi_token, tokenizer.image_token) == (
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    )
    assert tokenizer.boi_token_id == config["boi_token_index"]
    assert tokenizer.convert_tokens_to_ids("<end_of_image>") == config["eoi_token_index"]
    assert tokenizer.image_token_id == config["image_token_index"]

    # Special tokens stay whole; English words are single pieces, never unknown or raw bytes.
    text = f"<start_of_turn>user\n{CAPTION} {QUESTION}<end_of_turn>"
    tokens = tokenizer.tokenize(text)
    assert tokens[0] == "<start_of_turn>" and tokens[-1] == "<end_of_turn>"
    assert "▁circle" in tokens and "▁square" in tokens and "▁false" in tokens
    assert not any(token.startswith("<0x") or token == "<unk>" for token in tokens)
    for answer in ["True", "False"]:
        assert len(tokenizer(answer, add_special_tokens=False).input_ids) == 1
    # Byte fallback: any text round-trips.
    odd = "naïve 日本 ✓"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False).input_ids) == odd


def test_chat_template(bases):
    processor = AutoProcessor.from_pretrained(bases.gemma)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == f"<bos><start_of_turn>user\n<start_of_image>{QUESTION}<end_of_turn>\n<start_of_turn>model\n"
    tokenizer = AutoTokenizer.from_pretrained(bases.gemma)
    assert tokenizer.apply_chat_template(messages, tokenize=False) == prompt.removesuffix("<start_of_turn>model\n")


def test_model_and_processor(bases):
    model, info = Gemma3ForConditionalGeneration.from_pretrained(bases.gemma, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert isinstance(AutoModelForImageTextToText.from_pretrained(bases.gemma), Gemma3ForConditionalGeneration)
    processor = AutoProcessor.from_pretrained(bases.gemma)
    assert isinstance(processor, Gemma3Processor)
    assert processor.image_seq_length == model.config.mm_tokens_per_image == 16

    vocab_size = model.config.text_config.vocab_size
    assert model.get_input_embeddings().num_embeddings == vocab_size > len(processor.tokenizer)

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{CAPTION} {QUESTION}"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=image, return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == 16
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], vocab_size)
    assert torch.isfinite(logits).all()


def test_vae(bases):
    vae = AutoencoderKLWan.from_pretrained(bases.cosmos, subfolder="vae")
    real_defaults = inspect.signature(AutoencoderKLWan.__init__).parameters  # diffusers' defaults are the real VAE's
    assert vae.config.latents_mean == real_defaults["latents_mean"].default
    assert vae.config.latents_std == real_defaults["latents_std"].default
    video = torch.rand(1, 3, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latent = vae.encode(video).latent_dist.mode()
    assert latent.shape == (1, 16, 1, 8, 8)
