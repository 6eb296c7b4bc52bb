"""Tiny random stand-ins for TheWorld's two frozen base models, for tests and demos without downloads.

`make_tiny_bases` writes a tiny Gemma 3 (laid out like `google/gemma-3-4b-it`) and a tiny diffusers repository
holding a Wan VAE (laid out like `nvidia/Cosmos-Predict2-2B-Video2World`). Both are built from scratch,
deterministically from a seed, in well under a second, and load through the same `from_pretrained` calls as the real
repositories.
"""

import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKLWan, ModelMixin
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    GemmaTokenizer,
    GenerationConfig,
    SiglipVisionConfig,
)
from transformers.image_utils import PILImageResampling


@dataclass(frozen=True)
class TinyBases:
    """Where `make_tiny_bases` wrote the two base models: a Gemma 3 repository and a Cosmos-Predict2 one."""

    gemma: Path
    cosmos: Path


# Gemma's special tokens with the real strings. pad/eos/bos/unk/mask keep their real ids (0-4); the turn and image
# markers follow directly (the real ids are 105, 106, 255999, 256000 and 262144).
PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN, MASK_TOKEN = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
START_OF_TURN_TOKEN, END_OF_TURN_TOKEN = "<start_of_turn>", "<end_of_turn>"
BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
SPECIAL_TOKENS = [
    PAD_TOKEN,
    EOS_TOKEN,
    BOS_TOKEN,
    UNK_TOKEN,
    MASK_TOKEN,
    START_OF_TURN_TOKEN,
    END_OF_TURN_TOKEN,
    BOI_TOKEN,
    EOI_TOKEN,
    IMAGE_TOKEN,
]
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
END_OF_TURN_ID, BOI_ID, EOI_ID, IMAGE_ID = 6, 7, 8, 9

# Rows of the embedding matrix past the tokenizer, as in the real model (262,208 rows for fewer tokens).
SPARE_EMBEDDING_ROWS = 64
EMBEDDING_STD = 0.3

# Size of the trained BPE vocabulary, special and byte-fallback tokens included (the corpus may end it earlier).
BPE_VOCAB_SIZE = 1536

# The chat template of google/gemma-3-4b-it, verbatim.
CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)

# Words of the built-in training corpus: colours, shapes, the COCO object classes and the VSR spatial relations.
COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray", "grey"]
SHAPES = ["circle", "square", "triangle", "rectangle", "star", "cross", "diamond", "ellipse", "hexagon", "ball"]
OBJECTS = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip
RELATIONS = [
    "adjacent to", "alongside", "at the side of", "at the right side of", "at the left side of", "attached to",
    "at the back of", "ahead of", "against", "at the edge of", "off", "past", "toward", "down", "deep down", "up",
    "away from", "along", "around", "from", "into", "to", "across", "across from", "through", "down from", "facing",
    "facing away from", "parallel to", "perpendicular to", "on top of", "beneath", "beside", "behind", "left of",
    "right of", "under", "in front of", "below", "above", "over", "in the middle of", "by", "close to", "near",
    "far from", "far away from", "connected to", "detached from", "has as a part", "part of", "contains", "within",
    "at", "on", "in", "with", "surrounding", "among", "consists of", "out of", "between", "inside", "outside",
    "touching", "beyond", "next to", "opposite to", "after", "enclosed by", "to the left of", "to the right of",
]  # fmt: skip
PROMPTS = [
    "Is this statement about the image true or false?",
    "Answer with True or False.",
    "Does the caption describe the image correctly?",
    "Statement:",
    "Caption:",
    "Question:",
    "Answer:",
    "Describe the image.",
    "What is in the image?",
    "Where is the object?",
    "Yes",
    "No",
    "True",
    "False",
    "user",
    "model",
    "0 1 2 3 4 5 6 7 8 9 10 100 2024",
    "a an the this that these those it its there here and or not no yes of for is are was were be",
]


def _training_corpus() -> list[str]:
    """Deterministic English sentences covering the words a TheWorld test or demo uses."""
    corpus = []
    for i, relation in enumerate(RELATIONS):
        for j, colour in enumerate(COLOURS):
            shape, other_colour = SHAPES[(i + j) % len(SHAPES)], COLOURS[(i + 5 * j + 1) % len(COLOURS)]
            other_shape = SHAPES[(2 * i + j + 3) % len(SHAPES)]
            corpus.append(f"The {colour} {shape} is {relation} the {other_colour} {other_shape}.")
    for i, subject in enumerate(OBJECTS):
        for j in range(3):
            relation, other = RELATIONS[(3 * i + j) % len(RELATIONS)], OBJECTS[(7 * i + 11 * j + 1) % len(OBJECTS)]
            corpus.append(f"The {subject} is {relation} the {other}.")
            corpus.append(f"A {COLOURS[(i + j) % len(COLOURS)]} {subject} {relation} a {other}.")
    for prompt in PROMPTS:
        corpus.extend([prompt, f"user\n{prompt} {prompt}\n\n", f"model\n{prompt}\n"] * 20)
    return corpus


def make_tiny_tokenizer() -> GemmaTokenizer:
    """A Gemma tokenizer with the real special tokens and chat template over a small BPE trained on a fixed corpus."""
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS + byte_tokens,
        initial_alphabet=sorted(set(string.printable.replace(" ", "▁"))),
        show_progress=False,
    )
    # Train on "▁word" pieces, the way Gemma's normalizer writes spaces; the byte tokens back up any other character.
    bpe = Tokenizer(BPE(unk_token=UNK_TOKEN, byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("▁", behavior="merged_with_next"),
            pre_tokenizers.Split(Regex("\n+"), behavior="isolated"),
            pre_tokenizers.Punctuation(),
        ]
    )
    bpe.train_from_iterator(_training_corpus(), trainer)
    model = json.loads(bpe.to_str())["model"]
    # As transformers' own Gemma 3 conversion script builds it; the turn markers are special tokens of the vocabulary.
    tokenizer = GemmaTokenizer(
        vocab=model["vocab"],
        merges=[tuple(merge) for merge in model["merges"]],
        add_bos_token=True,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "boi_token": BOI_TOKEN, "eoi_token": EOI_TOKEN},
        chat_template=CHAT_TEMPLATE,
    )
    turn_tokens = [START_OF_TURN_TOKEN, END_OF_TURN_TOKEN]
    tokenizer.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in turn_tokens], special_tokens=True
    )
    return tokenizer


def tiny_gemma_config(
    vocab_size: int,
    vision_overrides: dict[str, Any] | None = None,
    mm_tokens_per_image: int = 16,
    **text_overrides: Any,
) -> Gemma3Config:
    """A two-layer Gemma 3 config in the shape of google/gemma-3-4b-it, with the tiny tokenizer's special token ids.

    `text_overrides` replace entries of the text config (e.g. `num_hidden_layers=1`), `vision_overrides` entries of
    the SigLIP config (e.g. `image_size=224`); `mm_tokens_per_image` is the number of image tokens per image.
    """
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "layer_types": ["sliding_attention", "full_attention"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        # The real model sets it to its head_dim (256): attention scores are scaled by 1/sqrt(head_dim).
        "query_pre_attn_scalar": 16,
        "sliding_window": 512,
        "max_position_embeddings": 2048,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "pad_token_id": PAD_ID,
        "bos_token_id": BOS_ID,
        "eos_token_id": [EOS_ID, END_OF_TURN_ID],
        **text_overrides,
    }
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 4,
        "vision_use_head": False,
        **(vision_overrides or {}),
    }
    return Gemma3Config(
        text_config=Gemma3TextConfig(**text_config),
        vision_config=SiglipVisionConfig(**vision_config),
        mm_tokens_per_image=mm_tokens_per_image,
        boi_token_index=BOI_ID,
        eoi_token_index=EOI_ID,
        image_token_index=IMAGE_ID,
        eos_token_id=[EOS_ID, END_OF_TURN_ID],
        architectures=["Gemma3ForConditionalGeneration"],
    )


def tiny_vae_config(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a tiny `AutoencoderKLWan` with the real VAE's latent space: 16 channels, 8x spatial and
    4x temporal compression, the real `latents_mean` and `latents_std`. `overrides` replace entries (`base_dim=16`)."""
    return {
        "base_dim": 8,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 1,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
        "latents_mean": [
            -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
            0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
        ],
        "latents_std": [
            2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
            3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916,
        ],
        **overrides,
    }  # fmt: skip


def make_tiny_bases(
    directory: str | os.PathLike,
    seed: int = 0,
    *,
    text_overrides: dict[str, Any] | None = None,
    vision_overrides: dict[str, Any] | None = None,
    mm_tokens_per_image: int = 16,
    vae_overrides: dict[str, Any] | None = None,
) -> TinyBases:
    """Write a tiny random Gemma 3 to `directory/gemma` and a tiny Cosmos-Predict2 VAE repository to
    `directory/cosmos`. The same seed gives byte-identical files.

    The keyword arguments resize the bases (see `tiny_gemma_config` and `tiny_vae_config`); the image processor
    follows the SigLIP image size and `mm_tokens_per_image`.
    """
    directory = Path(directory)
    bases = TinyBases(gemma=directory / "gemma", cosmos=directory / "cosmos")

    tokenizer = make_tiny_tokenizer()
    config = tiny_gemma_config(
        len(tokenizer) + SPARE_EMBEDDING_ROWS, vision_overrides, mm_tokens_per_image, **(text_overrides or {})
    )
    # Seed a forked generator so the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForConditionalGeneration(config)
        # A trained Gemma's embedding rows are long enough for the tied output layer to make confident predictions;
        # at this width the default init (std 0.02) caps every logit near 1 and a frozen LM could never answer.
        torch.nn.init.normal_(model.get_input_embeddings().weight, std=EMBEDDING_STD)
        vae = AutoencoderKLWan(**tiny_vae_config(**(vae_overrides or {})))
    write_gemma_repository(model, tokenizer, bases.gemma)
    write_vae_repository(vae, bases.cosmos)
    return bases


def write_gemma_repository(model: Gemma3ForConditionalGeneration, tokenizer: GemmaTokenizer, directory: Path) -> None:
    """Save `model` and `tokenizer` in the layout of the real google/gemma-3-4b-it repository: the model with the real
    sampling defaults, and a Gemma 3 processor (chat template; image processor sized to the SigLIP input)."""
    config = model.config
    image_size = config.vision_config.image_size
    image_processor = Gemma3ImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BILINEAR,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=config.mm_tokens_per_image,
    )
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        top_k=64,
        top_p=0.95,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    # transformers 5 keeps the image processor inside processor_config.json; the real repository also has its own file.
    image_processor.save_pretrained(directory)


def write_vae_repository(
    vae: ModelMixin, directory: Path, pipeline_class_name: str = "Cosmos2VideoToWorldPipeline"
) -> None:
    """Save `vae` in the layout of a real diffusers pipeline repository (by default Cosmos-Predict2's):
    `model_index.json` and `vae/`."""
    vae.save_pretrained(directory / "vae")
    # Only the VAE is stored, so the index names only the VAE.
    model_index = {
        "_class_name": pipeline_class_name,
        "_diffusers_version": diffusers.__version__,
        "vae": ["diffusers", type(vae).__name__],
    }
    index_text = json.dumps(model_index, indent=2, sort_keys=True) + "\n"
    (directory / "model_index.json").write_text(index_text, encoding="utf-8")
