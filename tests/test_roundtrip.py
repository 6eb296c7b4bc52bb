"""Saving and loading: the checkpoint's exact contents, and loading it in a fresh process with only transformers,
diffusers and torch (remote code), from a local folder and from an offline Hub cache."""

import ast
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from fresh_process import Checkpoint, load_in_fresh_process, reference_logits, save_checkpoint
from hub_cache import populate_hub_cache, repo_folder_name
from transformers import AutoConfig
from transformers.dynamic_module_utils import get_imports
from world_inputs import CHECKPOINT_FILES, make_image, perturb_trainable

import theworld
from theworld import TheWorld, TheWorldConfig, TheWorldProcessor
from theworld.hub.files import REMOTE_CODE_FILES

# What the remote code may import besides the standard library (packaging and safetensors come with transformers).
REMOTE_CODE_REQUIREMENTS = {"torch", "transformers", "diffusers", "huggingface_hub", "numpy", "PIL"}
REMOTE_CODE_REQUIREMENTS |= {"packaging", "safetensors"}

TINY_WORLD = {"world_image_size": 64, "world_grid_size": 2}


def trained_world(make_world, seed: int = 7, **config):
    torch.manual_seed(0)
    model, processor = make_world(**config)
    perturb_trainable(model, seed=seed)
    return model, processor


def folder_checkpoint(tiny_bases, root: Path, name: str = "checkpoint", **config) -> Checkpoint:
    model = TheWorld.from_bases(tiny_bases.gemma, tiny_bases.cosmos, **{**TINY_WORLD, **config})
    perturb_trainable(model, seed=7)
    processor = TheWorldProcessor.from_model_config(model.config)
    folder = root / name
    return save_checkpoint(str(folder), folder, model, processor, make_image(21, size=(45, 61)))


def rewrite_weights(folder: Path, seed: int) -> None:
    """Gives a copied Gemma repository other random weights (same names and shapes): a later commit."""
    generator = torch.Generator().manual_seed(seed)
    weights = safetensors.torch.load_file(folder / "model.safetensors")
    changed = {name: torch.randn(t.shape, generator=generator).to(t.dtype) for name, t in weights.items()}
    safetensors.torch.save_file(changed, folder / "model.safetensors", metadata={"format": "pt"})


def hub_checkpoint(tiny_bases, root: Path, cache: Path) -> Checkpoint:
    """Bases taken from the Hub cache by repo id, the checkpoint put there as `tiny-org/theworld`; afterwards the
    Gemma repository gets a newer commit on `main`, which a load must ignore (the checkpoint pins its revision)."""
    commits = {
        "gemma": populate_hub_cache(cache, "tiny-org/gemma", tiny_bases.gemma),
        "cosmos": populate_hub_cache(cache, "tiny-org/cosmos", tiny_bases.cosmos),
    }
    hub = {"cache_dir": cache, "local_files_only": True}
    model = TheWorld.from_bases("tiny-org/gemma", "tiny-org/cosmos", **TINY_WORLD, **hub)
    perturb_trainable(model, seed=11)
    processor = TheWorldProcessor.from_model_config(model.config, **hub)
    checkpoint = save_checkpoint("tiny-org/theworld", root / "hub-checkpoint", model, processor, make_image(22))
    commits["theworld"] = populate_hub_cache(cache, "tiny-org/theworld", root / "hub-checkpoint")

    newer = root / "gemma-newer"
    shutil.copytree(tiny_bases.gemma, newer)
    rewrite_weights(newer, seed=5)
    commits["gemma-newer"] = populate_hub_cache(cache, "tiny-org/gemma", newer)
    checkpoint.commits, checkpoint.cache = commits, cache
    return checkpoint


@pytest.fixture(scope="module")
def fresh_loads(tiny_bases, tmp_path_factory) -> dict[str, tuple[Checkpoint, dict]]:
    """A folder checkpoint and a Hub-cache checkpoint, each loaded in a fresh process (one for both: it saves an
    import of torch and transformers)."""
    root = tmp_path_factory.mktemp("roundtrip")
    cache = root / "hub"
    checkpoints = {
        "folder": folder_checkpoint(tiny_bases, root),
        "hub": hub_checkpoint(tiny_bases, root, cache),
        "transformer-projector": folder_checkpoint(tiny_bases, root, "transformer", projector_type="transformer"),
    }
    # A repository with a checkpoint in a subfolder. Transformers reads remote code from a repository's root only, so
    # the code files sit there too.
    shutil.copytree(root / "checkpoint", root / "repo" / "runs" / "best")
    for name in REMOTE_CODE_FILES:
        shutil.copy(root / "checkpoint" / name, root / "repo" / name)
    checkpoints["loading-arguments"] = replace(
        checkpoints["folder"],
        source=str(root / "repo"),
        load_kwargs={"subfolder": "runs/best", "attn_implementation": "eager", "dtype": "auto", "device_map": "cpu"},
    )
    loads = load_in_fresh_process(checkpoints, root / "fresh", env={"HF_HUB_CACHE": str(cache)})
    return {name: (checkpoints[name], loads[name]) for name in checkpoints}


def assert_fresh_load_reproduces(checkpoint: Checkpoint, load: dict, atol: float = 1e-6) -> None:
    report, tensors = load["report"], load["tensors"]
    assert "error" not in report, report.get("error")
    for key in ("model", "config", "processor"):
        assert report[key].startswith("transformers_modules."), report
    assert torch.equal(tensors["input_ids"], checkpoint.input_ids)
    torch.testing.assert_close(tensors["logits"], checkpoint.logits, rtol=0, atol=atol)
    trained = {name.removeprefix("trained."): t for name, t in tensors.items() if name.startswith("trained.")}
    expected = checkpoint.model.trainable_state_dict()
    assert trained.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(trained[name], tensor), name


# ---------------------------------------------------------------------------------------------- 4. a local folder


def test_checkpoint_holds_exactly_the_trained_part(make_world, tmp_path):
    model, processor = trained_world(make_world)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert {path.name for path in tmp_path.iterdir()} == CHECKPOINT_FILES

    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    with safetensors.safe_open(tmp_path / "model.safetensors", framework="pt") as weights:
        assert set(weights.keys()) == set(trainable)
        for name, parameter in trainable.items():
            tensor = weights.get_tensor(name)
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, parameter.detach()), name
    # The checkpoint is small: a few hundred kB for the tiny model, the Gemma and VAE weights are not in it.
    trainable_bytes = sum(p.numel() * 4 for p in trainable.values())
    assert trainable_bytes < (tmp_path / "model.safetensors").stat().st_size < trainable_bytes + 4096

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_theworld.TheWorldConfig",
        "AutoModel": "modeling_theworld.TheWorld",
        "AutoModelForImageTextToText": "modeling_theworld.TheWorld",
    }
    assert config["model_type"] == "theworld"
    assert config["gemma_config"]["model_type"] == "gemma3"
    assert config["world_encoder_config"]["z_dim"] == model.world_encoder.model.config.z_dim
    processor_config = json.loads((tmp_path / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_theworld.TheWorldProcessor"}
    assert processor_config["num_world_tokens"] == model.config.num_world_tokens
    assert processor_config["world_image_size"] == model.config.world_image_size

    # The shipped code is the package's own code, and imports nothing but what a Hub user has.
    package = Path(theworld.__file__).parent
    for name in REMOTE_CODE_FILES:
        assert (tmp_path / name).read_bytes() == (package / name).read_bytes(), name
        requirements = set(get_imports(tmp_path / name)) - set(sys.stdlib_module_names)
        assert requirements <= REMOTE_CODE_REQUIREMENTS, (name, requirements)
        for node in ast.walk(ast.parse((tmp_path / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] != "theworld", (name, node.module)


def test_fresh_process_reproduces_the_logits_from_a_folder(fresh_loads):
    checkpoint, load = fresh_loads["folder"]
    # The trained part was perturbed away from its initialisation; the reload must bring back those values.
    assert_fresh_load_reproduces(checkpoint, load)

    # In this process, too, the reload reproduces the trained weights and the logits.
    reloaded = TheWorld.from_pretrained(checkpoint.source)
    reloaded_processor = TheWorldProcessor.from_pretrained(checkpoint.source)
    for name, tensor in checkpoint.model.trainable_state_dict().items():
        assert torch.equal(reloaded.trainable_state_dict()[name], tensor), name
    logits = reference_logits(reloaded, reloaded_processor, checkpoint.image, checkpoint.text)
    torch.testing.assert_close(logits, checkpoint.logits, rtol=0, atol=0)


def test_fresh_process_reproduces_a_transformer_projector(fresh_loads):
    checkpoint, load = fresh_loads["transformer-projector"]
    assert any(".encoder.layers.1." in name for name in checkpoint.model.trainable_state_dict())
    assert_fresh_load_reproduces(checkpoint, load, atol=1e-5)


def test_fresh_process_takes_the_loading_arguments_of_any_transformers_model(fresh_loads):
    """AutoModel.from_pretrained with subfolder, attn_implementation, dtype="auto" and device_map, remote code only."""
    checkpoint, load = fresh_loads["loading-arguments"]
    assert load["report"].get("attn_implementation") == "eager", load["report"]
    # Eager and sdpa attention agree up to float rounding.
    assert_fresh_load_reproduces(checkpoint, load, atol=1e-4)


# ---------------------------------------------------------------------------------------------- 5. the Hub cache


def test_fresh_process_loads_a_repo_id_from_the_offline_hub_cache(fresh_loads):
    checkpoint, load = fresh_loads["hub"]
    commits, config = checkpoint.commits, checkpoint.model.config
    # from_bases pinned the commits the cache resolved `main` to, and the checkpoint records them.
    assert config.gemma_model_name_or_path == "tiny-org/gemma"
    assert (config.gemma_revision, config.world_encoder_revision) == (commits["gemma"], commits["cosmos"])
    assert commits["gemma-newer"] != commits["gemma"], "the Gemma repository moved on after the checkpoint was made"
    gemma_repo = checkpoint.cache / repo_folder_name("tiny-org/gemma")
    assert (gemma_repo / "refs" / "main").read_text() == commits["gemma-newer"]
    assert (gemma_repo / "snapshots" / commits["gemma"] / "model.safetensors").is_file()
    cosmos_snapshot = checkpoint.cache / repo_folder_name("tiny-org/cosmos") / "snapshots" / commits["cosmos"]
    assert (cosmos_snapshot / "model_index.json").is_file() and (cosmos_snapshot / "vae" / "config.json").is_file()

    # In this process, through `cache_dir`: the pinned Gemma commit, not `main`, is loaded.
    reloaded = TheWorld.from_pretrained("tiny-org/theworld", cache_dir=checkpoint.cache, local_files_only=True)
    assert reloaded.config.gemma_revision == commits["gemma"]
    logits = reference_logits(reloaded, checkpoint.processor, checkpoint.image, checkpoint.text)
    torch.testing.assert_close(logits, checkpoint.logits, rtol=0, atol=1e-6)
    # Control: `main` now holds other Gemma weights, so an unpinned load would not reproduce the logits.
    unpinned = TheWorld.from_pretrained(
        "tiny-org/theworld", cache_dir=checkpoint.cache, local_files_only=True, gemma_revision=None
    )
    unpinned_logits = reference_logits(unpinned, checkpoint.processor, checkpoint.image, checkpoint.text)
    assert not torch.allclose(unpinned_logits, checkpoint.logits, atol=1e-3)

    # In a fresh process, through HF_HUB_CACHE and HF_HUB_OFFLINE=1, with remote code only.
    assert load["report"].get("gemma_revision") == commits["gemma"]
    assert load["report"].get("world_encoder_revision") == commits["cosmos"]
    assert_fresh_load_reproduces(checkpoint, load)


# ---------------------------------------------------------------------------------------------- 8. the config


def test_config_round_trip(make_world, tmp_path):
    model, processor = trained_world(make_world)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    def saved_fields(config: TheWorldConfig) -> dict:
        return {key: value for key, value in config.to_dict().items() if key != "_name_or_path"}

    loaded = TheWorldConfig.from_pretrained(tmp_path)
    assert saved_fields(loaded) == saved_fields(model.config)
    assert (loaded.num_world_tokens, loaded.world_token_dim) == (
        model.config.num_world_tokens,
        model.config.world_token_dim,
    )
    auto = AutoConfig.from_pretrained(tmp_path)  # `import theworld` registered the model type
    assert type(auto) is TheWorldConfig
    assert saved_fields(auto) == saved_fields(model.config)

    overridden = TheWorldConfig.from_pretrained(tmp_path, projector_type="linear")
    assert overridden.projector_type == "linear" and model.config.projector_type == "mlp"


def test_world_layout_override_that_does_not_fit_the_checkpoint_fails_clearly(make_world, tmp_path):
    model, processor = trained_world(make_world)
    assert model.config.world_grid_size == 2
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="shape mismatch") as error:
        TheWorld.from_pretrained(tmp_path, world_grid_size=1)
    message = str(error.value)
    assert "world_projector.layers.0.weight" in message and str(tmp_path) in message
    with pytest.raises(ValueError, match="missing|unexpected"):
        TheWorld.from_pretrained(tmp_path, projector_type="linear")
