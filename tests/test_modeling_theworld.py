"""TheWorld against the contract of every Transformers model, in the style of transformers' model tests: a tester
builds a tiny model and processor-made inputs, and each generation mode is compared with the same computation done
row by row or unexpanded (first-step logits, which every mode computes before it chooses a token)."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Gemma3ForConditionalGeneration
from world_inputs import make_image, perturb_trainable, prompt

from theworld import TheWorld, TheWorldConfig, TheWorldProcessor
from theworld.modeling_theworld import CACHE_NAME

TINY_WORLD = {"world_image_size": 64, "world_grid_size": 2}
QUESTIONS = ["Is the red circle left of the blue square?", "Where is the cat?"]


@dataclass
class TheWorldModelTester:
    """A tiny, 'trained' TheWorld (seeded random trainable part) and its processor, and batches made the way users
    make them."""

    model: TheWorld
    processor: TheWorldProcessor

    @classmethod
    def build(cls, tiny_bases, seed: int = 1, **config) -> "TheWorldModelTester":
        torch.manual_seed(0)
        model = TheWorld.from_bases(tiny_bases.gemma, tiny_bases.cosmos, **{**TINY_WORLD, **config})
        perturb_trainable(model, seed=seed)
        return cls(model, TheWorldProcessor.from_model_config(model.config))

    def prompts(self, image_counts: tuple[int, ...]) -> list[tuple[str, list]]:
        """One (text, images) per entry of `image_counts`, with that many images each (distinct images and sizes)."""
        prompts, seed = [], 40
        for row, count in enumerate(image_counts):
            text = prompt(self.processor, QUESTIONS[row % len(QUESTIONS)] + " " * row, num_images=count)
            prompts.append((text, [make_image(seed + k, size=(40 + 7 * k, 48 + 5 * row)) for k in range(count)]))
            seed += count
        return prompts

    def batch(self, image_counts: tuple[int, ...] = (1, 1), padding_side: str = "left") -> dict[str, torch.Tensor]:
        """The prompts of `image_counts` as one padded batch."""
        texts, images = zip(*self.prompts(image_counts), strict=True)
        self.processor.tokenizer.padding_side = padding_side
        return self.processor(text=list(texts), images=list(images), padding=True, return_tensors="pt")

    def rows(self, image_counts: tuple[int, ...] = (1, 1)) -> list[dict[str, torch.Tensor]]:
        """The prompts of `batch(image_counts)`, each alone."""
        prompts = self.prompts(image_counts)
        return [self.processor(text=text, images=images, return_tensors="pt") for text, images in prompts]

    @torch.no_grad()
    def next_token_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**inputs).logits[:, -1]


@pytest.fixture(scope="module")
def tester(tiny_bases) -> TheWorldModelTester:
    return TheWorldModelTester.build(tiny_bases)


def first_step_logits(model: TheWorld, inputs: dict, **generate_kwargs) -> torch.Tensor:
    """The raw logits `generate` computed for its first new token, one row per (expanded) sequence."""
    output = model.generate(
        **inputs, max_new_tokens=1, output_logits=True, return_dict_in_generate=True, **generate_kwargs
    )
    return output.logits[0]


# ---------------------------------------------------------------------------------------------- input expansion


@pytest.mark.parametrize(
    "mode",
    [
        {"num_beams": 2, "do_sample": False},
        {"num_beams": 2, "do_sample": True},
        {"num_return_sequences": 2, "do_sample": True},
    ],
    ids=["beam search", "beam sampling", "sampling, 2 sequences"],
)
def test_expanded_generation_keeps_each_prompts_images(tester, mode):
    """Prompt 0 holds two images, prompt 1 one: every beam or returned sequence starts from its own prompt's logits."""
    counts = (2, 1)
    expected = torch.stack([tester.next_token_logits(row)[0] for row in tester.rows(counts)])
    torch.manual_seed(0)
    expanded = first_step_logits(tester.model, tester.batch(counts), **mode)
    torch.testing.assert_close(expanded, expected.repeat_interleave(2, dim=0), rtol=0, atol=1e-4)


def test_greedy_and_sampling_match_row_by_row(tester):
    counts = (1, 2)
    batch = tester.batch(counts)
    tokens = tester.model.generate(**batch, max_new_tokens=4, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for row, single in enumerate(tester.rows(counts)):
        alone = tester.model.generate(**single, max_new_tokens=4, do_sample=False)[:, single["input_ids"].shape[1] :]
        assert torch.equal(tokens[row], alone[0]), row
    sampled = first_step_logits(tester.model, batch, do_sample=True, top_k=5)
    expected = torch.stack([tester.next_token_logits(row)[0] for row in tester.rows(counts)])
    torch.testing.assert_close(sampled, expected, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------- caches


def test_static_cache_generates_what_the_dynamic_cache_does(tester):
    batch = tester.batch((1, 1))
    dynamic = tester.model.generate(**batch, max_new_tokens=4, do_sample=False)
    static = tester.model.generate(**batch, max_new_tokens=4, do_sample=False, cache_implementation="static")
    assert torch.equal(static, dynamic)


def test_generation_continues_from_a_returned_cache(tester):
    """generate(..., cache=<the cache an earlier generate returned>) continues where it stopped (the argument is
    `past_key_values` before transformers 5.24)."""
    inputs = tester.rows((1,))[0]
    whole = tester.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    first = tester.model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    attention_mask = torch.ones_like(first.sequences)
    token_type_ids = torch.cat([inputs["token_type_ids"], torch.zeros_like(first.sequences[:, -3:])], dim=1)
    continued = tester.model.generate(
        **{**inputs, "input_ids": first.sequences, "attention_mask": attention_mask, "token_type_ids": token_type_ids},
        **{CACHE_NAME: getattr(first, CACHE_NAME)},
        max_new_tokens=3,
        do_sample=False,
    )
    assert torch.equal(continued, whole)


# ---------------------------------------------------------------------------------------------- assisted decoding


def test_assisted_decoding_with_a_theworld_assistant(tester, tiny_bases):
    assistant = TheWorldModelTester.build(tiny_bases, seed=2).model
    inputs = tester.rows((1,))[0]
    plain = tester.model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assisted = tester.model.generate(**inputs, max_new_tokens=5, do_sample=False, assistant_model=assistant)
    assert torch.equal(assisted, plain)


def test_a_gemma_assistant_is_refused_and_the_same_gemma_wrapped_as_theworld_assists(tester, tiny_bases):
    """transformers hands the main model's inputs to the assistant, and a plain Gemma 3 refuses world inputs."""
    inputs = tester.rows((1,))[0]
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_bases.gemma).eval()
    with pytest.raises(ValueError, match="Wrap the assistant's Gemma 3 as a TheWorld"):
        tester.model.generate(**inputs, max_new_tokens=5, do_sample=False, assistant_model=gemma)
    wrapped = TheWorld.from_bases(tiny_bases.gemma, tiny_bases.cosmos, **TINY_WORLD)
    plain = tester.model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assisted = tester.model.generate(**inputs, max_new_tokens=5, do_sample=False, assistant_model=wrapped)
    assert torch.equal(assisted, plain)


# ---------------------------------------------------------------------------------------------- outputs, attention


def test_return_dict_false_gives_the_output_fields_as_a_tuple(tester):
    inputs = tester.rows((1,))[0]
    with torch.no_grad():
        output = tester.model(**inputs, labels=inputs["input_ids"])
        as_tuple = tester.model(**inputs, labels=inputs["input_ids"], return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(output)
    assert torch.equal(as_tuple[0], output.loss) and torch.equal(as_tuple[1], output.logits)


def test_eager_attention_gives_the_logits_of_sdpa(tester, tiny_bases, tmp_path):
    tester.model.save_pretrained(tmp_path)
    eager = TheWorld.from_pretrained(tmp_path, attn_implementation="eager")
    assert eager.gemma.config.get_text_config()._attn_implementation == "eager"
    assert tester.model.gemma.config.get_text_config()._attn_implementation == "sdpa"
    batch = tester.batch((1, 2))
    real_tokens = batch["attention_mask"].bool()  # padding positions attend to nothing; their logits mean nothing
    with torch.no_grad():
        eager_logits, sdpa_logits = eager(**batch).logits[real_tokens], tester.model(**batch).logits[real_tokens]
    torch.testing.assert_close(eager_logits, sdpa_logits, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------- training


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_bases):
    """With LoRA, so gradients flow back through checkpointed decoder layers into trained weights inside them."""
    model = TheWorldModelTester.build(tiny_bases).model
    model.add_language_model_lora({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    tester = TheWorldModelTester(model, TheWorldProcessor.from_model_config(model.config))
    batch = tester.batch((1, 2))
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)

    def loss_and_gradients() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        loss = model(**batch, labels=labels).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.trainable_parameters().items()}

    model.train()
    loss, gradients = loss_and_gradients()
    model.enable_activation_checkpointing()
    assert model.gemma.model.language_model.gradient_checkpointing
    checkpointed_loss, checkpointed_gradients = loss_and_gradients()
    torch.testing.assert_close(checkpointed_loss, loss, rtol=0, atol=1e-6)
    assert gradients.keys() == checkpointed_gradients.keys() and any("lora_" in name for name in gradients)
    for name, gradient in gradients.items():
        torch.testing.assert_close(checkpointed_gradients[name], gradient, rtol=1e-5, atol=1e-6, msg=name)


def test_a_training_step_gives_gradients_only_to_the_trained_part(tester):
    model = tester.model
    batch = tester.batch((2, 1))
    model.zero_grad()
    loss = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss
    loss.backward()
    assert torch.isfinite(loss)
    with_gradients = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_gradients == set(model.trainable_parameters())
    model.zero_grad()


# ---------------------------------------------------------------------------------------------- building


def test_a_model_built_from_its_config_never_generates_world_tokens(tester):
    model = TheWorld(tester.model.config)
    world_ids = [model.config.world_start_token_id, model.config.world_token_id, model.config.world_end_token_id]
    assert set(world_ids) <= set(model.generation_config.suppress_tokens or [])


def test_meta_device_initialisation_restores_the_latent_statistics(tester):
    config: TheWorldConfig = tester.model.config
    with torch.device("meta"):
        model = TheWorld(config)
    model.to_empty(device="cpu")
    model.init_weights()
    z_dim, encoder = config.world_latent_channels, model.world_encoder
    mean, std = config.world_encoder_config["latents_mean"], config.world_encoder_config["latents_std"]
    assert torch.equal(encoder.latents_mean, torch.tensor(mean).view(1, z_dim, 1, 1, 1))
    assert torch.equal(encoder.latents_std, torch.tensor(std).view(1, z_dim, 1, 1, 1))


def test_the_base_model_is_gemma(tester):
    assert tester.model.base_model is tester.model.gemma


def test_save_and_load_keep_the_logits(tester, tmp_path):
    tester.model.save_pretrained(tmp_path)
    reloaded = TheWorld.from_pretrained(tmp_path)
    batch = tester.batch((1, 2))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, tester.model(**batch).logits, rtol=0, atol=0)


def test_unlike_a_plain_model_the_checkpoint_holds_the_trained_part_and_names_the_bases(tester, tmp_path):
    """Deliberately unlike a plain Transformers model, whose checkpoint holds every weight: TheWorld's frozen bases
    come from their own repositories, so its checkpoint holds the trained part and names the bases to rebuild."""
    tester.model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert saved.keys() == tester.model.trainable_parameters().keys()
    assert sum(tensor.numel() for tensor in saved.values()) < sum(p.numel() for p in tester.model.parameters()) / 10
    reloaded = TheWorld.from_pretrained(tmp_path)
    assert reloaded.config.gemma_model_name_or_path == str(Path(tester.model.gemma.name_or_path).resolve())
