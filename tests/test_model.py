"""TheWorld's forward pass: the Gemma 3 baseline, the world path, the loss, padding, ablation and generation."""

import pytest
import torch
from transformers import AutoProcessor, Gemma3ForConditionalGeneration
from world_inputs import OTHER_QUESTION, QUESTION, make_image, perturb_trainable, prompt

from theworld import TheWorld, TheWorldProcessor


@pytest.fixture(scope="module")
def gemma(tiny_bases) -> Gemma3ForConditionalGeneration:
    return Gemma3ForConditionalGeneration.from_pretrained(tiny_bases.gemma).eval()


@pytest.fixture(scope="module")
def gemma_processor(tiny_bases):
    return AutoProcessor.from_pretrained(tiny_bases.gemma)


@pytest.fixture()
def world(make_world):
    """A TheWorld whose trainable part is 'trained' (seeded random), and its processor."""
    torch.manual_seed(0)
    model, processor = make_world()
    perturb_trainable(model, seed=1)
    return model, processor


def world_mask(model: TheWorld, input_ids: torch.Tensor) -> torch.Tensor:
    return input_ids == model.config.world_token_id


def two_prompt_batch(processor, padding_side: str):
    """Two prompts of different lengths with different images (one odd-sized), padded as a batch, and each alone."""
    texts = [prompt(processor, QUESTION), prompt(processor, OTHER_QUESTION)]
    images = [make_image(1), make_image(2, size=(37, 91))]
    processor.tokenizer.padding_side = padding_side
    batch = processor(text=texts, images=[[image] for image in images], padding=True, return_tensors="pt")
    singles = [
        processor(text=text, images=image, return_tensors="pt") for text, image in zip(texts, images, strict=True)
    ]
    lengths = [single["input_ids"].shape[1] for single in singles]
    assert lengths[0] != lengths[1], "the two prompts must differ in length so that one row is padded"
    return batch, singles


# ---------------------------------------------------------------------------------------------- 1. the Gemma baseline


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text-only"])
def test_disabled_world_is_exactly_gemma(gemma, gemma_processor, make_world, tmp_path, with_image):
    image = make_image(0) if with_image else None
    reference_inputs = gemma_processor(
        text=prompt(gemma_processor, num_images=int(with_image)), images=image, return_tensors="pt"
    )
    with torch.no_grad():
        expected = gemma(**reference_inputs).logits

    model, processor = make_world(enable_world=False)
    assert isinstance(processor, TheWorldProcessor) and not processor.enable_world
    inputs = processor(text=prompt(processor, num_images=int(with_image)), images=image, return_tensors="pt")
    assert set(inputs) == set(reference_inputs), "with enable_world=False the processor is the Gemma 3 processor"
    for key in inputs:
        assert torch.equal(inputs[key], reference_inputs[key]), key

    # A trained checkpoint, loaded with the world path switched off, is Gemma 3 again.
    trained, trained_processor = make_world()
    perturb_trainable(trained, seed=3)
    trained.save_pretrained(tmp_path)
    trained_processor.save_pretrained(tmp_path)
    reloaded = TheWorld.from_pretrained(tmp_path, enable_world=False)
    assert reloaded.config.enable_world is False

    with torch.no_grad():
        for candidate in (model, reloaded):
            logits = candidate(**reference_inputs).logits
            assert logits.shape == expected.shape
            assert (logits - expected).abs().max().item() == 0.0


def test_disabled_world_is_exactly_gemma_on_a_padded_batch(gemma, gemma_processor, make_world):
    model, processor = make_world(enable_world=False)
    batch, _ = two_prompt_batch(gemma_processor, "left")
    assert not batch["attention_mask"].all(), "one row must be padded"
    with torch.no_grad():
        expected = gemma(**batch).logits
        logits = model(**batch).logits
    assert (logits - expected).abs().max().item() == 0.0

    expected_tokens = gemma.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    tokens = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(tokens, expected_tokens)


def test_disabled_world_refuses_world_placeholders(make_world):
    model, _ = make_world(enable_world=False)
    _, world_processor = make_world()
    inputs = world_processor(text=prompt(world_processor), images=make_image(0), return_tensors="pt")
    assert world_mask(model, inputs["input_ids"]).any()
    inputs.pop("world_pixel_values")
    with pytest.raises(ValueError, match="enable_world=False"):
        model(**inputs)


def test_world_tokens_take_spare_embedding_rows(tiny_bases, make_world):
    model, processor = make_world()
    base = Gemma3ForConditionalGeneration.from_pretrained(tiny_bases.gemma)
    rows = base.get_input_embeddings().weight.shape[0]
    assert model.get_input_embeddings().weight.shape[0] == rows, "the embedding matrix must never be resized"
    world_ids = [model.config.world_start_token_id, model.config.world_token_id, model.config.world_end_token_id]
    assert len(set(world_ids)) == 3 and max(world_ids) < rows
    assert len(processor.tokenizer) <= rows
    assert processor.tokenizer.convert_ids_to_tokens(world_ids) == [
        "<start_of_world>",
        "<world_soft_token>",
        "<end_of_world>",
    ]
    # Only the world part trains, in fp32.
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        name.startswith(("world_projector.", "world_boundary_embeddings", "world_position_embeddings"))
        for name in trainable
    )
    assert all(p.dtype == torch.float32 for p in model.trainable_state_dict().values())


def test_world_boundaries_start_as_the_blank_line_around_images(make_world):
    model, processor = make_world()
    (blank_line,) = processor.tokenizer.encode("\n\n", add_special_tokens=False)
    assert blank_line not in (model.gemma.config.boi_token_id, model.gemma.config.eoi_token_id)
    expected = model.get_input_embeddings()(torch.tensor([blank_line, blank_line]))
    torch.testing.assert_close(model.world_boundary_embeddings, expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- 2. the world path


def test_world_embeddings_land_on_their_placeholders(world):
    model, processor = world
    images = [make_image(10), make_image(11, size=(64, 24))]
    inputs = processor(text=prompt(processor, num_images=2), images=images, return_tensors="pt")
    input_ids, config = inputs["input_ids"], model.config
    hidden = config.get_text_config().hidden_size
    n = config.num_world_tokens

    # The processor writes, after each image, <start_of_world> + N x <world_soft_token> + <end_of_world>.
    ids = input_ids[0].tolist()
    starts = [i for i, token in enumerate(ids) if token == config.world_start_token_id]
    assert len(starts) == 2
    for start in starts:
        assert ids[start + 1 : start + 1 + n] == [config.world_token_id] * n
        assert ids[start + 1 + n] == config.world_end_token_id
    assert inputs["world_pixel_values"].shape == (2, 3, config.world_image_size, config.world_image_size)

    with torch.no_grad():
        embeds = model.embed_inputs(input_ids, inputs["pixel_values"], inputs["world_pixel_values"])
        expected_world = model.project_world(model.encode_world(inputs["world_pixel_values"])).reshape(-1, hidden)
        image_features = model.gemma.model.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output
        plain = model.get_input_embeddings()(input_ids)

    world = world_mask(model, input_ids)
    image = input_ids == model.gemma.config.image_token_id
    start = input_ids == config.world_start_token_id
    end = input_ids == config.world_end_token_id
    other = ~(world | image | start | end)
    assert int(world.sum()) == 2 * n
    # Image order is kept: the first block holds the first image's world tokens.
    assert torch.equal(embeds[world], expected_world)
    assert not torch.allclose(expected_world[:n], expected_world[n:])
    assert torch.equal(embeds[image], image_features.reshape(-1, hidden))
    assert torch.equal(embeds[start], model.world_boundary_embeddings[0].expand(2, hidden))
    assert torch.equal(embeds[end], model.world_boundary_embeddings[1].expand(2, hidden))
    assert torch.equal(embeds[other], plain[other])

    # forward() is exactly Gemma 3 run on those embeddings.
    with torch.no_grad():
        logits = model(**inputs).logits
        gemma_keys = ("attention_mask", "token_type_ids")
        expected = model.gemma(inputs_embeds=embeds, **{key: inputs[key] for key in gemma_keys}).logits
    assert torch.equal(logits, expected)


def test_world_latents_give_the_same_logits_as_world_pixels(world):
    model, processor = world
    inputs = processor(text=prompt(processor), images=make_image(4), return_tensors="pt")
    with torch.no_grad():
        from_pixels = model(**inputs).logits
        latents = model.encode_world(inputs.pop("world_pixel_values"))
        from_latents = model(**inputs, world_latents=latents).logits
        other_latents = model(**inputs, world_latents=torch.randn_like(latents)).logits
    assert latents.shape == (1, *model.config.world_latent_shape)
    assert torch.equal(from_latents, from_pixels)
    without_frames_axis = model(**inputs, world_latents=latents[:, :, 0]).logits  # one frame: the axis may be left out
    assert torch.equal(without_frames_axis, from_pixels)
    assert not torch.allclose(other_latents, from_pixels), "the latents must reach the logits"


def test_world_pixels_are_in_minus_one_to_one_and_normalised(world):
    model, processor = world
    black, white = make_image(0), make_image(0)
    black.paste((0, 0, 0), (0, 0, *black.size))
    white.paste((255, 255, 255), (0, 0, *white.size))
    pixels = processor.preprocess_world_images([black, white])
    assert pixels.dtype == torch.float32
    assert torch.equal(pixels[0], torch.full_like(pixels[0], -1.0))
    assert torch.equal(pixels[1], torch.full_like(pixels[1], 1.0))
    with torch.no_grad():
        latents = model.encode_world(pixels)
        raw = model.world_encoder.model.encode(pixels.unsqueeze(2)).latent_dist.mode()  # (n, z, 1, h, w)
    encoder_config = model.config.world_encoder_config
    mean = torch.tensor(encoder_config["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(encoder_config["latents_std"]).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(latents, (raw - mean) / std)


def answer_example(model, processor):
    """A prompt followed by an answer, with labels on the answer tokens only."""
    text = prompt(processor) + "True<end_of_turn>"
    inputs = processor(text=text, images=make_image(5), return_tensors="pt")
    answer_length = len(processor.tokenizer("True<end_of_turn>", add_special_tokens=False)["input_ids"])
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -answer_length:] = inputs["input_ids"][:, -answer_length:]
    return inputs, labels


def test_loss_covers_exactly_the_labelled_positions(world):
    model, processor = world
    inputs, labels = answer_example(model, processor)
    out = model(**inputs, labels=labels)

    with torch.no_grad():
        logits = model(**inputs, logits_to_keep=0).logits.float()[0, :-1]  # position t predicts token t + 1
    targets = labels[0, 1:]
    positions = (targets != -100).nonzero().flatten()
    assert 1 <= len(positions) < targets.numel() // 4, "only the answer carries loss"
    log_probs = torch.log_softmax(logits[positions], dim=-1)
    expected = -log_probs.gather(1, targets[positions, None]).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)
    # With labels, the output layer ran only at those positions.
    torch.testing.assert_close(out.logits[0].float(), logits[positions], rtol=0, atol=1e-5)

    with torch.no_grad():
        # labels[0] is never a target (nothing predicts the first token): changing it changes nothing.
        changed_first = labels.clone()
        changed_first[0, 0] = int(inputs["input_ids"][0, 0])
        assert model(**inputs, labels=changed_first).loss.item() == out.loss.item()
        # The loss is not rebuilt from input_ids: labelling the whole prompt would change it.
        assert model(**inputs, labels=inputs["input_ids"]).loss.item() != pytest.approx(out.loss.item())
        # Changing one labelled target changes the loss.
        changed = labels.clone()
        changed[0, -1] = (labels[0, -1] + 1) % model.config.get_text_config().vocab_size
        assert model(**inputs, labels=changed).loss.item() != pytest.approx(out.loss.item())

    # The gradient reaches the trainable world part and nothing frozen.
    out.loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_answer_only_logits_give_the_loss_and_gradients_of_full_logits(world):
    """By default, with labels, the output layer runs only where a label is; `logits_to_keep=0` computes them all."""
    model, processor = world
    processor.tokenizer.padding_side = "right"
    batch = processor(
        text=[prompt(processor) + "True<end_of_turn>", prompt(processor, OTHER_QUESTION) + "False<end_of_turn>"],
        images=[[make_image(5)], [make_image(6)]],
        padding=True,
        return_tensors="pt",
    )
    labels = torch.full_like(batch["input_ids"], -100)
    for row in range(2):  # the last two real tokens of each row (answer and end of turn) are the targets
        end = int(batch["attention_mask"][row].sum())
        labels[row, end - 2 : end] = batch["input_ids"][row, end - 2 : end]

    def loss_and_gradients(**kwargs) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        output = model(**batch, labels=labels, **kwargs)
        output.loss.backward()
        gradients = {name: parameter.grad.clone() for name, parameter in model.trainable_parameters().items()}
        return output.loss.detach(), output.logits, gradients

    loss, logits, gradients = loss_and_gradients()
    full_loss, full_logits, full_gradients = loss_and_gradients(logits_to_keep=0)
    labelled_positions = int((labels[:, 1:] != -100).any(0).sum())
    assert logits.shape[:2] == (2, labelled_positions) and full_logits.shape[:2] == batch["input_ids"].shape
    assert labelled_positions < batch["input_ids"].shape[1] // 4
    torch.testing.assert_close(loss, full_loss, rtol=1e-6, atol=1e-6)
    for name, gradient in full_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, rtol=1e-5, atol=1e-7, msg=name)
    model.zero_grad()


def test_logits_to_keep_n_gives_the_last_n_positions(world):
    """An int `logits_to_keep` keeps the last positions, as Gemma 3's slice does (TheWorld passes them by index)."""
    model, processor = world
    processor.tokenizer.padding_side = "left"
    batch = processor(
        text=[prompt(processor), prompt(processor, OTHER_QUESTION)],
        images=[[make_image(5)], [make_image(6)]],
        padding=True,
        return_tensors="pt",
    )
    length = batch["input_ids"].shape[1]
    with torch.no_grad():
        full = model(**batch, logits_to_keep=0).logits  # (2, length, vocab)
        for n in (1, 3, length + 5):
            kept = model(**batch, logits_to_keep=n).logits
            assert kept.shape[:2] == (2, min(n, length))
            torch.testing.assert_close(kept, full[:, -n:], rtol=0, atol=1e-5)


def test_loss_ignores_padding_in_a_batch(world):
    model, processor = world
    inputs, labels = answer_example(model, processor)
    processor.tokenizer.padding_side = "left"
    batch = processor(
        text=[prompt(processor) + "True<end_of_turn>", prompt(processor, OTHER_QUESTION + " Think twice.")],
        images=[[make_image(5)], [make_image(6)]],
        padding=True,
        return_tensors="pt",
    )
    # Row 0 is the labelled example, left-padded; row 1 carries no label at all.
    pad = batch["input_ids"].shape[1] - inputs["input_ids"].shape[1]
    assert pad > 0 and not batch["attention_mask"][0, :pad].any()
    batch_labels = torch.full_like(batch["input_ids"], -100)
    batch_labels[0, pad:] = labels[0]
    with torch.no_grad():
        alone = model(**inputs, labels=labels).loss
        batched = model(**batch, labels=batch_labels).loss
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_rows_match_each_row_alone(world, padding_side):
    model, processor = world
    batch, singles = two_prompt_batch(processor, padding_side)
    assert not batch["attention_mask"].all(), "one row must be padded"
    with torch.no_grad():
        batch_logits = model(**batch).logits
        for row, single in enumerate(singles):
            real = batch["attention_mask"][row].bool()
            assert torch.equal(batch["input_ids"][row][real], single["input_ids"][0])
            alone = model(**single).logits[0]
            torch.testing.assert_close(batch_logits[row][real], alone, rtol=0, atol=1e-5)


def test_ablation_zeroes_exactly_the_world_tokens(world):
    model, processor = world
    inputs = processor(text=prompt(processor), images=make_image(7), return_tensors="pt")
    world = world_mask(model, inputs["input_ids"])
    args = (inputs["input_ids"], inputs["pixel_values"], inputs["world_pixel_values"])
    with torch.no_grad():
        embeds = model.embed_inputs(*args)
        ablated = model.embed_inputs(*args, ablate_world=True)
        logits = model(**inputs).logits
        ablated_logits = model(**inputs, ablate_world=True).logits
    assert embeds[world].abs().sum() > 0
    assert torch.equal(ablated[world], torch.zeros_like(ablated[world]))
    assert torch.equal(ablated[~world], embeds[~world])
    assert not torch.allclose(logits, ablated_logits, atol=1e-4), "the world path must move the logits"


# ---------------------------------------------------------------------------------------------- 3. generate()

NEW_TOKENS = 8


def greedy(model, inputs, **kwargs):
    out = model.generate(
        **inputs,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
        **kwargs,
    )
    return out.sequences[:, inputs["input_ids"].shape[1] :], torch.stack(out.logits, dim=1)


def count_world_encodings(model, monkeypatch) -> list[int]:
    calls = []
    encode_world = model.encode_world

    def counting(world_pixel_values):
        calls.append(world_pixel_values.shape[0])
        return encode_world(world_pixel_values)

    monkeypatch.setattr(model, "encode_world", counting)
    return calls


def test_generate_with_and_without_cache_agree(world, monkeypatch):
    model, processor = world
    inputs = processor(text=prompt(processor), images=make_image(8), return_tensors="pt")
    calls = count_world_encodings(model, monkeypatch)

    cached_tokens, cached_logits = greedy(model, inputs, use_cache=True)
    assert calls == [1], "with the KV cache, the world view is encoded once, at prefill"
    calls.clear()
    tokens, logits = greedy(model, inputs, use_cache=False)
    assert len(calls) == NEW_TOKENS

    assert cached_tokens.shape == (1, NEW_TOKENS)
    assert torch.equal(cached_tokens, tokens)
    torch.testing.assert_close(cached_logits, logits, rtol=1e-4, atol=1e-4)
    world_ids = {model.config.world_start_token_id, model.config.world_token_id, model.config.world_end_token_id}
    assert not world_ids & set(tokens.flatten().tolist()), "world tokens are never generated"

    ablated_tokens, ablated_logits = greedy(model, inputs, ablate_world=True)
    assert not torch.allclose(ablated_logits, cached_logits, atol=1e-3), "the world path must steer generation"


def test_batched_generate_matches_one_by_one(world):
    model, processor = world
    batch, singles = two_prompt_batch(processor, "left")
    batch_tokens, batch_logits = greedy(model, batch)
    for row, single in enumerate(singles):
        tokens, logits = greedy(model, single)
        assert torch.equal(batch_tokens[row], tokens[0]), row
        torch.testing.assert_close(batch_logits[row], logits[0], rtol=0, atol=1e-4)
