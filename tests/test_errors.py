"""Bad checkpoints, bad configurations and bad inputs fail with messages that say what is wrong; odd images work."""

import re
import shutil

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, Gemma3ForConditionalGeneration
from world_inputs import make_image, perturb_trainable, prompt

from theworld import TheWorld, TheWorldConfig
from theworld.testing.tiny import tiny_gemma_config


@pytest.fixture()
def checkpoint(make_world, tmp_path):
    model, processor = make_world()
    perturb_trainable(model, seed=2)
    model.save_pretrained(tmp_path / "checkpoint")
    processor.save_pretrained(tmp_path / "checkpoint")
    return tmp_path / "checkpoint"


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_on_a_base_of_another_hidden_size_is_refused(tiny_bases, checkpoint, tmp_path):
    saved_hidden = AutoConfig.from_pretrained(tiny_bases.gemma).get_text_config().hidden_size
    other_hidden = saved_hidden // 2
    other = tmp_path / "gemma-narrow"
    shutil.copytree(tiny_bases.gemma, other)  # same tokenizer and processor, narrower model
    vocab_size = AutoConfig.from_pretrained(tiny_bases.gemma).get_text_config().vocab_size
    narrow_config = tiny_gemma_config(vocab_size, hidden_size=other_hidden, intermediate_size=2 * other_hidden)
    Gemma3ForConditionalGeneration(narrow_config).save_pretrained(other)

    with pytest.raises(ValueError) as error:
        TheWorld.from_pretrained(checkpoint, gemma_model_name_or_path=str(other))
    message = str(error.value)
    assert re.search(rf"hidden_size: checkpoint {saved_hidden} vs base {other_hidden}\b", message), message
    assert str(other) in message


def test_missing_weights_file_is_a_clear_os_error(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(OSError, match=r"has no model\.safetensors"):
        TheWorld.from_pretrained(checkpoint)


def test_pickled_weights_are_refused_without_unpickling(checkpoint, monkeypatch):
    model = TheWorld.from_pretrained(checkpoint)
    torch.save(model.trainable_state_dict(), checkpoint / "pytorch_model.bin")
    (checkpoint / "model.safetensors").unlink()

    calls = []

    def no_unpickling(*args, **kwargs):
        calls.append(args)
        raise AssertionError("torch.load must never run on a checkpoint")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(OSError, match=r"pickled weights \(pytorch_model\.bin\)") as error:
        TheWorld.from_pretrained(checkpoint)
    assert "safetensors" in str(error.value)
    assert calls == []


# ---------------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("projector_type", "resampler", r"choose one of linear, mlp, transformer"),
        ("world_grid_size", 0, r"grid size from 1 to 64"),
        ("world_image_size", 60, r"positive multiple of 16"),
        ("world_image_size", 0, r"positive multiple of 16"),
    ],
)
def test_unknown_config_values_name_the_allowed_ones(tiny_bases, checkpoint, field, value, allowed):
    # Allowed values, from the config's own constants: 8x VAE compression x grid 2, at most 4096 world tokens.
    with pytest.raises((ValueError, StrictDataclassError), match=allowed) as error:
        TheWorld.from_bases(
            tiny_bases.gemma, tiny_bases.cosmos, **{"world_image_size": 64, "world_grid_size": 2, field: value}
        )
    assert f"{field}={value!r}" in str(error.value)
    with pytest.raises((ValueError, StrictDataclassError), match=allowed):
        TheWorld.from_pretrained(checkpoint, **{field: value})


def test_world_token_ids_must_fit_the_embedding(checkpoint):
    config = TheWorldConfig.from_pretrained(checkpoint)
    rows = config.get_text_config().vocab_size
    config.world_end_token_id = rows
    with pytest.raises(ValueError, match=rf"do not fit Gemma's {rows} embedding rows"):
        config.validate_world_token_ids()
    config.world_end_token_id = config.world_token_id
    with pytest.raises(ValueError, match="three distinct integers"):
        config.validate_world_token_ids()


# ---------------------------------------------------------------------------------------------- inputs


@pytest.fixture()
def world(make_world):
    model, processor = make_world()
    perturb_trainable(model, seed=4)
    return model, processor


def test_world_images_that_do_not_match_the_placeholders_are_refused(world):
    model, processor = world
    n = model.config.num_world_tokens
    inputs = processor(text=prompt(processor), images=make_image(0), return_tensors="pt")

    two_images = torch.cat([inputs["world_pixel_values"]] * 2)
    with pytest.raises(
        ValueError, match=rf"hold {n} <world_soft_token> placeholders, but 2 world images give {2 * n}"
    ):
        model(**{**inputs, "world_pixel_values": two_images})

    latents = model.encode_world(inputs["world_pixel_values"])
    with pytest.raises(
        ValueError, match=rf"hold {n} <world_soft_token> placeholders, but 3 world images give {3 * n}"
    ):
        model(**{**inputs, "world_pixel_values": None, "world_latents": torch.cat([latents] * 3)})

    with pytest.raises(ValueError, match=rf"hold {n} <world_soft_token> placeholders but neither"):
        model(**{key: value for key, value in inputs.items() if key != "world_pixel_values"})

    # Gemma-only text (no placeholders) with a world view.
    processor.enable_world = False
    plain = processor(text=prompt(processor), images=make_image(0), return_tensors="pt")
    assert "world_pixel_values" not in plain
    with pytest.raises(ValueError, match=rf"hold 0 <world_soft_token> placeholders, but 1 world images give {n}"):
        model(**plain, world_pixel_values=inputs["world_pixel_values"])


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 32, 32), (3, 64, 64), (1, 3, 1, 64, 64), (1, 1, 64, 64), (1, 4, 64, 64)],
    ids=["small", "unbatched", "video", "gray", "rgba"],
)
def test_wrong_world_pixel_shape_is_a_clear_error(world, shape):
    model, processor = world
    inputs = processor(text=prompt(processor), images=make_image(0), return_tensors="pt")
    size = model.config.world_image_size
    expected = re.escape(f"world_pixel_values must have shape (num_images, 3, {size}, {size})")
    with pytest.raises(ValueError, match=expected) as error:
        model(**{**inputs, "world_pixel_values": torch.zeros(shape)})
    assert str(tuple(shape)) in str(error.value)


def test_wrong_world_latent_shape_is_a_clear_error(world):
    model, processor = world
    inputs = processor(text=prompt(processor), images=make_image(0), return_tensors="pt")
    latents = model.encode_world(inputs.pop("world_pixel_values"))
    channels, frames, side, _ = model.config.world_latent_shape
    assert latents.shape == (1, channels, frames, side, side)
    with pytest.raises(
        ValueError,
        match=re.escape(f"world_latents must have shape (num_images, {channels}, {frames}, {side}, {side})"),
    ):
        model(**inputs, world_latents=latents[:, :, :, : side // 2])


def test_text_with_world_placeholders_is_refused_by_the_processor(world):
    _, processor = world
    with pytest.raises(ValueError, match="already holds <world_soft_token>"):
        processor(text=prompt(processor) + "<world_soft_token>", images=make_image(0), return_tensors="pt")


@pytest.mark.parametrize(
    ("mode", "size"),
    [("L", (48, 40)), ("RGBA", (48, 40)), ("P", (48, 40)), ("LA", (40, 48)), ("RGB", (37, 91)), ("RGB", (1, 3))],
    ids=["grayscale", "rgba", "palette", "grayscale-alpha", "odd-size", "tiny"],
)
def test_unusual_images_just_work(world, mode, size):
    model, processor = world
    image = make_image(3, size=size, mode=mode)
    assert image.mode == mode
    inputs = processor(text=prompt(processor), images=image, return_tensors="pt")
    side = model.config.world_image_size
    assert inputs["world_pixel_values"].shape == (1, 3, side, side)
    assert inputs["world_pixel_values"].min() >= -1 and inputs["world_pixel_values"].max() <= 1
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(logits).all()
