"""`TheWorld.from_pretrained` keeps the contract of `PreTrainedModel.from_pretrained`: dtype, device_map,
attn_implementation, quantization_config, subfolder; local bases load from any working directory; a deleted base and
a too-old library are clear errors; TheWorld's own calls raise no deprecation warning of the installed transformers."""

import logging
import shutil
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan
from fresh_process import run_fresh
from packaging.requirements import Requirement
from transformers import Gemma3ForConditionalGeneration
from transformers.utils import logging as transformers_logging
from world_inputs import make_image, perturb_trainable, prompt

from theworld import TheWorld, TheWorldProcessor, configuration_theworld
from theworld.modeling_theworld import CACHE_NAME

TINY_WORLD = {"world_image_size": 64, "world_grid_size": 2}


@pytest.fixture(scope="module")
def checkpoint(tiny_bases, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A saved checkpoint with a perturbed trained part, and the logits it gives on one image and prompt."""
    model = TheWorld.from_bases(tiny_bases.gemma, tiny_bases.cosmos, **TINY_WORLD)
    perturb_trainable(model, seed=3)
    processor = TheWorldProcessor.from_model_config(model.config)
    folder = tmp_path_factory.mktemp("loading") / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, logits_of(model, processor)


def logits_of(model: TheWorld, processor: TheWorldProcessor) -> torch.Tensor:
    inputs = processor(text=prompt(processor), images=make_image(4), return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits.float()


def processor_of(folder: Path) -> TheWorldProcessor:
    return TheWorldProcessor.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------- base locations


def test_local_bases_are_recorded_absolute_so_the_checkpoint_loads_from_any_folder(tiny_bases, tmp_path, monkeypatch):
    work = tmp_path / "work"
    for base in ("gemma", "cosmos"):
        shutil.copytree(getattr(tiny_bases, base), work / "bases" / base)
    monkeypatch.chdir(work)
    model = TheWorld.from_bases("bases/gemma", "./bases/cosmos", **TINY_WORLD)
    assert model.config.gemma_model_name_or_path == str(work.resolve() / "bases" / "gemma")
    assert model.config.world_encoder_name_or_path == str(work.resolve() / "bases" / "cosmos")
    perturb_trainable(model, seed=5)
    processor = TheWorldProcessor.from_model_config(model.config)
    model.save_pretrained("checkpoint")
    processor.save_pretrained("checkpoint")
    expected = logits_of(model, processor)

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    reloaded = TheWorld.from_pretrained(work / "checkpoint")
    torch.testing.assert_close(logits_of(reloaded, processor_of(work / "checkpoint")), expected, rtol=0, atol=0)


def test_a_deleted_base_folder_names_the_field_the_path_and_the_override(tiny_bases, tmp_path):
    gemma = shutil.copytree(tiny_bases.gemma, tmp_path / "gemma")
    model = TheWorld.from_bases(gemma, tiny_bases.cosmos, **TINY_WORLD)
    model.save_pretrained(tmp_path / "checkpoint")
    shutil.rmtree(gemma)
    with pytest.raises(OSError) as error:
        TheWorld.from_pretrained(tmp_path / "checkpoint")
    message = str(error.value)
    assert f"'{gemma}'" in message and "`gemma_model_name_or_path` in its config.json" in message, message
    assert "does not exist" in message and "from_pretrained(..., gemma_model_name_or_path=" in message, message
    # The override the message names works.
    TheWorld.from_pretrained(tmp_path / "checkpoint", gemma_model_name_or_path=str(tiny_bases.gemma))


# ---------------------------------------------------------------------------------------------- library versions


def test_the_minimum_versions_are_the_ones_pyproject_states():
    requirements = {Requirement(line).name: Requirement(line) for line in metadata.requires("theworld")}
    for name, minimum in configuration_theworld.MINIMUM_VERSIONS.items():
        lower_bounds = [spec.version for spec in requirements[name].specifier if spec.operator == ">="]
        assert lower_bounds == [minimum], (name, str(requirements[name].specifier))


@pytest.mark.parametrize("library", ["transformers", "diffusers", "peft"])
def test_a_library_older_than_the_range_is_named_with_both_versions(monkeypatch, library):
    real_version = configuration_theworld.version
    monkeypatch.setattr(
        configuration_theworld, "version", lambda name: "0.1.0" if name == library else real_version(name)
    )
    minimum = configuration_theworld.MINIMUM_VERSIONS[library]
    with pytest.raises(ImportError) as error:
        configuration_theworld.check_library_versions()
    message = str(error.value)
    assert f"{library}>={minimum} (installed: 0.1.0)" in message
    assert f'pip install -U "{library}>={minimum}"' in message


def test_a_pre_release_of_a_newer_library_is_accepted(monkeypatch):
    real_version = configuration_theworld.version
    monkeypatch.setattr(
        configuration_theworld, "version", lambda name: "9.0.0.dev0" if name == "diffusers" else real_version(name)
    )
    configuration_theworld.check_library_versions()


def test_peft_may_be_missing(monkeypatch):
    """Only LoRA checkpoints need peft; they ask for it when they load."""
    real_version = configuration_theworld.version

    def version(name: str) -> str:
        if name == "peft":
            raise configuration_theworld.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(configuration_theworld, "version", version)
    configuration_theworld.check_library_versions()


TOO_OLD_SCRIPT = """
import importlib.metadata, sys
sys.modules["theworld"] = None
real_version = importlib.metadata.version
importlib.metadata.version = lambda name: "4.57.6" if name == "transformers" else real_version(name)
from transformers import AutoModel
try:
    AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
except ImportError as error:
    print(error)
"""


def test_the_remote_code_refuses_a_too_old_transformers_before_anything_else(checkpoint, tmp_path):
    printed = run_fresh(TOO_OLD_SCRIPT, str(checkpoint[0]), cwd=tmp_path)
    minimum = configuration_theworld.MINIMUM_VERSIONS["transformers"]
    assert f"TheWorld needs transformers>={minimum} (installed: 4.57.6)" in printed, printed


# ---------------------------------------------------------------------------------------------- dtype


@pytest.fixture(scope="module")
def bfloat16_checkpoint(tiny_bases, tmp_path_factory) -> Path:
    """A checkpoint on copies of the tiny bases stored in bfloat16."""
    root = tmp_path_factory.mktemp("bfloat16")
    gemma = shutil.copytree(tiny_bases.gemma, root / "gemma")
    Gemma3ForConditionalGeneration.from_pretrained(gemma, dtype=torch.bfloat16).save_pretrained(gemma)
    cosmos = shutil.copytree(tiny_bases.cosmos, root / "cosmos")
    vae = AutoencoderKLWan.from_pretrained(cosmos, subfolder="vae", torch_dtype=torch.bfloat16)
    vae.save_pretrained(cosmos / "vae")
    model = TheWorld.from_bases(gemma, cosmos, dtype="auto", **TINY_WORLD)
    model.save_pretrained(root / "checkpoint")
    TheWorldProcessor.from_model_config(model.config).save_pretrained(root / "checkpoint")
    return root / "checkpoint"


@pytest.mark.parametrize(
    "dtype, expected",
    [("auto", torch.bfloat16), (None, torch.bfloat16), ("float32", torch.float32), (torch.float32, torch.float32)],
)
def test_dtype_auto_keeps_each_base_in_its_stored_dtype(bfloat16_checkpoint, dtype, expected):
    model = TheWorld.from_pretrained(bfloat16_checkpoint, dtype=dtype)
    assert model.gemma.dtype == expected and model.world_encoder.model.dtype == expected
    assert {parameter.dtype for parameter in model.trainable_parameters().values()} == {torch.float32}
    assert torch.isfinite(logits_of(model, processor_of(bfloat16_checkpoint))).all()


def test_a_dtype_that_is_no_torch_dtype_is_refused(checkpoint):
    with pytest.raises(ValueError, match="dtype='float33' is not a torch dtype"):
        TheWorld.from_pretrained(checkpoint[0], dtype="float33")


# ---------------------------------------------------------------------------------------------- device_map


@pytest.mark.parametrize(
    "device_map",
    [
        "cpu",
        "auto",
        {"": "cpu"},
        {"gemma": "cpu", "world_encoder": "cpu"},
        {"gemma.model": "cpu", "gemma.lm_head": "cpu"},
    ],
)
def test_device_map_places_the_bases_and_keeps_the_logits(checkpoint, device_map):
    folder, expected = checkpoint
    model = TheWorld.from_pretrained(folder, device_map=device_map)
    assert {parameter.device.type for parameter in model.parameters()} == {"cpu"}
    torch.testing.assert_close(logits_of(model, processor_of(folder)), expected, rtol=0, atol=1e-6)


def test_a_device_map_key_that_names_no_base_is_refused(checkpoint):
    with pytest.raises(ValueError, match=r"device_map keys \['world_projector'\] name no part of TheWorld"):
        TheWorld.from_pretrained(checkpoint[0], device_map={"world_projector": "cpu", "": "cpu"})


# ---------------------------------------------------------------------------------------------- attention, subfolder


def test_attn_implementation_reaches_the_gemma_base(checkpoint):
    folder, expected = checkpoint
    model = TheWorld.from_pretrained(folder, attn_implementation="eager")
    assert model.gemma.config.get_text_config()._attn_implementation == "eager"
    processor = processor_of(folder)
    inputs = processor(text=prompt(processor), images=make_image(4), return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, output_attentions=True)
    num_layers = model.config.get_text_config().num_hidden_layers
    assert outputs.attentions is not None and len(outputs.attentions) == num_layers
    torch.testing.assert_close(outputs.logits, expected, rtol=0, atol=1e-4)


def test_a_checkpoint_in_a_subfolder_loads_with_subfolder(checkpoint, tmp_path):
    folder, expected = checkpoint
    shutil.copytree(folder, tmp_path / "repo" / "runs" / "best")
    model = TheWorld.from_pretrained(tmp_path / "repo", subfolder="runs/best")
    torch.testing.assert_close(logits_of(model, processor_of(folder)), expected, rtol=0, atol=0)
    with pytest.raises(OSError):
        TheWorld.from_pretrained(tmp_path / "repo")  # no checkpoint at the top: subfolder is not ignored


# ---------------------------------------------------------------------------------------------- quantization


def test_quantization_config_quantizes_the_frozen_gemma_only(checkpoint):
    bitsandbytes = pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    folder, _ = checkpoint
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    model = TheWorld.from_pretrained(folder, quantization_config=quantization)
    language_model = model.gemma.model.language_model
    assert isinstance(language_model.layers[0].self_attn.q_proj, bitsandbytes.nn.Linear4bit)
    assert {parameter.dtype for parameter in model.trainable_parameters().values()} == {torch.float32}

    # A training step on top of the 4-bit base: gradients reach exactly the trained part. (In eval mode, on CPUs with
    # AVX512-BF16, bitsandbytes repacks 4-bit weights for inference, which fails for the tiny base's layers narrower
    # than its 64-value quantization block; real Gemma 3 layers are wider.)
    model.train()
    processor = processor_of(folder)
    inputs = processor(text=prompt(processor), images=make_image(4), return_tensors="pt")
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    with_gradients = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert with_gradients == set(model.trainable_parameters())

    with pytest.raises(ValueError, match="trains the whole language model"):
        TheWorld.from_pretrained(folder, quantization_config=quantization, freeze_language_model=False)


# ---------------------------------------------------------------------------------------------- other arguments


@pytest.mark.parametrize(
    "argument, reason",
    [
        ({"gguf_file": "model.gguf"}, "build on it with from_bases"),
        ({"use_safetensors": False}, "never unpickles weights"),
        ({"tp_plan": "auto"}, "tensor parallelism is not supported"),
        ({"ignore_mismatched_sizes": True}, "must fit its bases exactly"),
    ],
)
def test_arguments_that_cannot_apply_are_refused_with_the_reason(checkpoint, argument, reason):
    with pytest.raises(ValueError, match=reason):
        TheWorld.from_pretrained(checkpoint[0], **argument)


def test_unknown_arguments_are_refused_and_ignored_ones_accepted(checkpoint):
    with pytest.raises(TypeError, match=r"Unexpected arguments for TheWorld.from_pretrained: \['world_size'\]"):
        TheWorld.from_pretrained(checkpoint[0], world_size=3)
    TheWorld.from_pretrained(checkpoint[0], low_cpu_mem_usage=True, trust_remote_code=True, use_safetensors=True)


# ---------------------------------------------------------------------------------------------- deprecations


def test_theworlds_own_calls_raise_no_deprecation_warning(checkpoint):
    """Loading, a forward pass, a decode step from the returned cache, generation and activation checkpointing, on
    the installed transformers."""
    folder, _ = checkpoint
    messages = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    transformers_logging.get_logger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = TheWorld.from_pretrained(folder)
            processor = processor_of(folder)
            inputs = processor(text=prompt(processor), images=make_image(4), return_tensors="pt")
            with torch.no_grad():
                outputs = model(**inputs, use_cache=True)
                cache = getattr(outputs, CACHE_NAME)
                prefill_length = cache.get_seq_length()
                next_token = outputs.logits[:, -1:].argmax(-1)
                attention_mask = torch.cat([inputs["attention_mask"], torch.ones_like(next_token)], dim=1)
                model(input_ids=next_token, attention_mask=attention_mask, **{CACHE_NAME: cache})
            model.generate(**inputs, max_new_tokens=3, do_sample=False)
            model.enable_activation_checkpointing()
    finally:
        transformers_logging.get_logger().removeHandler(handler)
    deprecations = [m for m in messages + [str(w.message) for w in caught] if "deprecat" in m.lower()]
    assert deprecations == []
    assert prefill_length == inputs["input_ids"].shape[1] and cache.get_seq_length() == prefill_length + 1


def test_a_decode_step_continues_from_the_returned_cache(checkpoint):
    """One step from the prefill's cache gives the logits of the whole sequence run at once."""
    folder, _ = checkpoint
    model = TheWorld.from_pretrained(folder)
    processor = processor_of(folder)
    inputs = processor(text=prompt(processor), images=make_image(4), return_tensors="pt")
    with torch.no_grad():
        prefill = model(**inputs, use_cache=True)
        next_token = prefill.logits[:, -1:].argmax(-1)
        attention_mask = torch.cat([inputs["attention_mask"], torch.ones_like(next_token)], dim=1)
        step = model(input_ids=next_token, attention_mask=attention_mask, cache=getattr(prefill, CACHE_NAME))
        token_type_ids = torch.cat([inputs["token_type_ids"], torch.zeros_like(next_token)], dim=1)
        input_ids = torch.cat([inputs["input_ids"], next_token], dim=1)
        whole_inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        whole = model(**{**inputs, **whole_inputs})
    torch.testing.assert_close(step.logits[:, -1], whole.logits[:, -1], rtol=0, atol=1e-5)
