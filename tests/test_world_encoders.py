"""World encoders: the contract check on every built-in encoder and a plugin; each trains, saves only its trained part
and reloads without `theworld`; plugins found through their entry point, refused with what to install; encoders at
pinned revisions; the latent cache keyed by encoder."""

import importlib
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import safetensors.torch
import torch
from fresh_process import Checkpoint, load_in_fresh_process, save_checkpoint
from hub_cache import populate_hub_cache
from packaging.version import Version
from world_inputs import make_image, perturb_trainable, prompt

from theworld import TheWorld, TheWorldProcessor
from theworld.cli import main
from theworld.data import synthesize_vsr
from theworld.encoders_theworld import BUILT_IN_WORLD_ENCODERS, world_encoder_class, world_encoder_plugin
from theworld.testing.tiny_encoders import TINY_WORLD_ENCODERS, make_tiny_world_encoder
from theworld.training.latent_cache import WorldLatentCache
from theworld.world_encoder_check import WorldEncoderContractError, check_world_encoder

PLUGIN_SOURCE = Path(__file__).parents[1] / "examples" / "world-encoder-plugin"
PLUGIN_TYPE, PLUGIN_PACKAGE = "pixel-patches", "theworld-example-encoder"
# World image size per encoder type: a 2 x 2 grid of world tokens over each tiny encoder's latent grid.
IMAGE_SIZES = {"wan2.1": 64, PLUGIN_TYPE: 64, **{kind: size for kind, (_, size) in TINY_WORLD_ENCODERS.items()}}
WAN22_SUPPORTED = Version(version("diffusers")) >= Version("0.35.0")
ANSWER = "True<end_of_turn>"


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory) -> Path:
    """The example plugin, installed by pip into a folder of its own that is on `sys.path` for this module."""
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN_SOURCE, root / "source")
    site = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(site), str(source)], check=True)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def encoder_repositories(tiny_bases, example_plugin, tmp_path_factory) -> dict[str, Path]:
    """A tiny repository for every encoder type this installation supports, in its real repository's layout."""
    root = tmp_path_factory.mktemp("encoders")
    repositories = {"wan2.1": tiny_bases.cosmos}
    for kind in TINY_WORLD_ENCODERS:
        if kind != "wan2.2" or WAN22_SUPPORTED:
            repositories[kind] = make_tiny_world_encoder(kind, root / kind)
    torch.manual_seed(0)
    world_encoder_class(PLUGIN_TYPE)(patch_size=16, channels=8).save_pretrained(root / PLUGIN_TYPE)
    repositories[PLUGIN_TYPE] = root / PLUGIN_TYPE
    return repositories


@pytest.fixture(scope="module")
def vsr_dir(tmp_path_factory) -> Path:
    return synthesize_vsr(tmp_path_factory.mktemp("vsr"), seed=0, n_train=4, n_dev=2, n_test=2)


def train_a_few_steps(model: TheWorld, processor: TheWorldProcessor, steps: int = 3) -> list[float]:
    """Answer-only training steps on one example; returns the losses."""
    inputs = processor(text=prompt(processor) + ANSWER, images=make_image(3), return_tensors="pt")
    labels = torch.full_like(inputs["input_ids"], -100)
    answer_length = len(processor.tokenizer(ANSWER, add_special_tokens=False)["input_ids"])
    labels[:, -answer_length:] = inputs["input_ids"][:, -answer_length:]
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.fixture(scope="module")
def encoder_checkpoints(tiny_bases, encoder_repositories, tmp_path_factory) -> dict[str, Checkpoint]:
    """For every encoder type: a TheWorld trained a few steps on the tiny Gemma 3 and that encoder, saved."""
    root = tmp_path_factory.mktemp("encoder-checkpoints")
    checkpoints = {}
    for kind, repository in encoder_repositories.items():
        torch.manual_seed(0)
        model = TheWorld.from_bases(
            tiny_bases.gemma,
            repository,
            world_encoder_type=kind,
            world_image_size=IMAGE_SIZES[kind],
            world_grid_size=2,
        )
        perturb_trainable(model, seed=1)
        processor = TheWorldProcessor.from_model_config(model.config)
        losses = train_a_few_steps(model, processor)
        assert losses[-1] < losses[0], (kind, losses)
        checkpoints[kind] = save_checkpoint(str(root / kind), root / kind, model, processor, make_image(9))
    return checkpoints


@pytest.mark.parametrize("encoder_type", list(BUILT_IN_WORLD_ENCODERS))
def test_every_built_in_encoder_passes_the_contract_check(encoder_type, encoder_repositories):
    if encoder_type not in encoder_repositories:  # Wan 2.2 on a diffusers without it: a clear error instead
        with pytest.raises(ImportError, match=r'needs diffusers>=0\.35\.0 .*pip install -U "diffusers>=0\.35\.0"'):
            world_encoder_class(encoder_type)
        return
    check = check_world_encoder(encoder_type, encoder_repositories[encoder_type])
    encoder_class = BUILT_IN_WORLD_ENCODERS[encoder_type]
    assert check.plugin is None
    assert check.output_shape == (2, check.latent_channels, 1, 2, 2)
    assert encoder_type == encoder_class.encoder_type


def test_the_contract_check_names_a_broken_clause(encoder_repositories, monkeypatch):
    encoder_class = world_encoder_class(PLUGIN_TYPE)
    monkeypatch.setattr(encoder_class, "latent_frames", property(lambda self: 2))
    with pytest.raises(
        WorldEncoderContractError, match=r"latents of shape .* = \(2, 8, 2, 2, 2\), got \(2, 8, 1, 2, 2\)"
    ):
        check_world_encoder(PLUGIN_TYPE, encoder_repositories[PLUGIN_TYPE])


def test_every_encoder_trains_saves_its_trained_part_and_reloads_without_theworld(
    encoder_checkpoints, example_plugin, tmp_path
):
    for kind, checkpoint in encoder_checkpoints.items():
        folder = Path(checkpoint.source)
        saved = safetensors.torch.load_file(folder / "model.safetensors")
        assert set(saved) == set(checkpoint.model.trainable_state_dict()), kind
        assert not any(name.startswith("world_encoder.") for name in saved), kind
        config = json.loads((folder / "config.json").read_text())
        assert config["world_encoder_type"] == kind
        assert config["world_latent_channels"] == checkpoint.model.world_encoder.latent_channels

    # One interpreter without `theworld`, with the plugin on its path (as if pip-installed), loads them all.
    loads = load_in_fresh_process(encoder_checkpoints, tmp_path, env={"PYTHONPATH": str(example_plugin)})
    for kind, checkpoint in encoder_checkpoints.items():
        report, tensors = loads[kind]["report"], loads[kind]["tensors"]
        assert "error" not in report, report.get("error")
        assert report["model"].startswith("transformers_modules."), kind
        assert torch.equal(tensors["input_ids"], checkpoint.input_ids)
        torch.testing.assert_close(tensors["logits"], checkpoint.logits, rtol=0, atol=1e-5, msg=kind)


def test_a_plugin_is_found_through_its_entry_point_and_recorded(encoder_checkpoints, encoder_repositories):
    expected = {"package": PLUGIN_PACKAGE, "version": "0.1.0"}
    assert world_encoder_plugin(PLUGIN_TYPE) == expected
    assert check_world_encoder(PLUGIN_TYPE, encoder_repositories[PLUGIN_TYPE]).plugin == expected
    assert encoder_checkpoints[PLUGIN_TYPE].model.config.world_encoder_plugin == expected
    assert encoder_checkpoints["wan2.1"].model.config.world_encoder_plugin is None


def test_loading_a_plugin_checkpoint_without_the_plugin_says_what_to_install(encoder_checkpoints, example_plugin):
    sys.path.remove(str(example_plugin))
    importlib.invalidate_caches()
    try:
        with pytest.raises(ImportError) as error:
            TheWorld.from_pretrained(encoder_checkpoints[PLUGIN_TYPE].source)
    finally:
        sys.path.insert(0, str(example_plugin))
        importlib.invalidate_caches()
    message = str(error.value)
    assert f"comes from the package {PLUGIN_PACKAGE} 0.1.0, which is not installed" in message
    assert f'pip install "{PLUGIN_PACKAGE}~=0.1.0"' in message


def test_loading_a_plugin_checkpoint_with_an_incompatible_plugin_version_says_what_to_install(
    encoder_checkpoints, tmp_path
):
    folder = shutil.copytree(encoder_checkpoints[PLUGIN_TYPE].source, tmp_path / "newer-plugin")
    config = json.loads((folder / "config.json").read_text())
    config["world_encoder_plugin"]["version"] = "0.2.1"  # saved with a later, incompatible release of the plugin
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ImportError, match=r"made with theworld-example-encoder 0\.2\.1; 0\.1\.0 is installed"
    ) as error:
        TheWorld.from_pretrained(folder)
    assert f'pip install "{PLUGIN_PACKAGE}~=0.2.1"' in str(error.value)


def test_a_plugin_for_another_api_version_or_library_range_is_refused(example_plugin, monkeypatch):
    encoder_class = world_encoder_class(PLUGIN_TYPE)
    monkeypatch.setattr(encoder_class, "requires", {"torch": ">=99"})
    with pytest.raises(
        ImportError, match=r'needs torch>=99 \(installed: .*\)\. Install with: pip install -U "torch>=99"'
    ):
        world_encoder_class(PLUGIN_TYPE)
    monkeypatch.setattr(encoder_class, "api_version", 2)
    with pytest.raises(
        ImportError, match="implements world-encoder API version 2; this TheWorld implements version 1"
    ):
        world_encoder_class(PLUGIN_TYPE)


def test_an_unknown_encoder_type_lists_the_known_ones(tiny_bases):
    with pytest.raises(
        ValueError, match=r"Unknown world encoder 'sora': built in are wan2\.1, wan2\.2, autoencoder-kl"
    ):
        TheWorld.from_bases(tiny_bases.gemma, tiny_bases.cosmos, world_encoder_type="sora")


def test_the_latent_cache_is_keyed_by_encoder(encoder_checkpoints, tmp_path):
    image_file = tmp_path / "image.png"
    make_image(4).save(image_file)
    keys = {}
    for kind in ("wan2.1", "autoencoder-kl", "dinov2"):
        checkpoint = encoder_checkpoints[kind]
        cache = WorldLatentCache(tmp_path / "cache", checkpoint.model, checkpoint.processor)
        keys[kind] = cache.key(image_file)
        cache.fill([image_file], progress=False)
        latent = cache.get(image_file)
        assert latent.shape == checkpoint.model.config.world_latent_shape, kind
    assert len(set(keys.values())) == len(keys)


def test_a_post_trained_encoder_at_another_revision_gives_another_reproducible_checkpoint(tiny_bases, tmp_path):
    """A fine-tuned VAE is another pinned source: two revisions of one repository, two checkpoints, each reloading
    with its own logits."""
    cache = tmp_path / "hub"
    base_commit = populate_hub_cache(cache, "tiny-org/cosmos", tiny_bases.cosmos)
    tuned = shutil.copytree(tiny_bases.cosmos, tmp_path / "cosmos-ft")
    weights_file = tuned / "vae" / "diffusion_pytorch_model.safetensors"
    generator = torch.Generator().manual_seed(3)
    weights = {
        name: tensor + 0.05 * torch.randn(tensor.shape, generator=generator)
        for name, tensor in safetensors.torch.load_file(weights_file).items()
    }
    safetensors.torch.save_file(weights, weights_file)
    tuned_commit = populate_hub_cache(cache, "tiny-org/cosmos", tuned, revision="ft")
    hub = {"cache_dir": cache, "local_files_only": True}

    logits, folders = {}, {}
    for revision, commit in (("main", base_commit), ("ft", tuned_commit)):
        model = TheWorld.from_bases(
            tiny_bases.gemma,
            "tiny-org/cosmos",
            world_encoder_revision=revision,
            world_image_size=64,
            world_grid_size=2,
            **hub,
        )
        assert model.config.world_encoder_revision == commit
        perturb_trainable(model, seed=5)  # the same trained part on both
        processor = TheWorldProcessor.from_model_config(model.config)
        inputs = processor(text=prompt(processor), images=make_image(6), return_tensors="pt")
        folders[revision] = tmp_path / revision
        model.save_pretrained(folders[revision])
        with torch.no_grad():
            logits[revision] = model(**inputs).logits
        reloaded = TheWorld.from_pretrained(folders[revision], **hub)
        with torch.no_grad():
            assert torch.equal(reloaded(**inputs).logits, logits[revision]), revision
    assert not torch.allclose(logits["main"], logits["ft"]), "the tuned encoder must change what the model sees"
    assert json.loads((folders["ft"] / "config.json").read_text())["world_encoder_revision"] == tuned_commit


def test_train_and_info_name_the_world_encoder(tiny_bases, encoder_repositories, vsr_dir, tmp_path, capsys):
    output_dir = tmp_path / "run"
    command = ["train", "--gemma", str(tiny_bases.gemma), "--world-encoder", "dinov2"]
    command += ["--world-encoder-path", str(encoder_repositories["dinov2"]), "--world-grid-size", "2"]
    command += ["--data", str(vsr_dir), "--output-dir", str(output_dir), "--max-steps", "1", "--batch-size", "2"]
    assert main([*command, "--no-progress", "--eval-examples", "2"]) == 0
    config = json.loads((output_dir / "checkpoint" / "config.json").read_text())
    assert (config["world_encoder_type"], config["world_image_size"]) == ("dinov2", 224)
    capsys.readouterr()
    assert main(["info", str(output_dir / "checkpoint")]) == 0
    info = capsys.readouterr().out
    assert "world encoder: dinov2 (DINOv2 (Dinov2Model, patch features, 14x))" in info
    assert "the dinov2 latent grid of a 224x224 view" in info
