import json
import random
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan

from theworld.testing import tiny_vae
from theworld.testing.tiny import tiny_vae_config
from theworld.testing.tiny_vae import (
    QUICK_STEPS,
    TinyVAEReport,
    cached_trained_tiny_vae,
    reconstruction_psnr,
    scene_pixels,
    train_tiny_vae,
)

COSMOS_FILES = {"model_index.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"}
# Held-out PSNR (dB) after QUICK_STEPS measured 18.4 to 20.4 over seeds 0-2; a random tiny VAE scores 6.5 to 8.5.
MIN_QUICK_PSNR = 16.0
MIN_GAIN_OVER_RANDOM = 8.0


@pytest.fixture(scope="module")
def quick_vae(tmp_path_factory: pytest.TempPathFactory) -> TinyVAEReport:
    return train_tiny_vae(tmp_path_factory.mktemp("tiny-vae"), steps=QUICK_STEPS)


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    return scene_pixels(random.Random("test-held-out"), 64)


def test_layout_and_architecture(quick_vae):
    path = quick_vae.path
    assert {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} == COSMOS_FILES
    assert json.loads((path / "model_index.json").read_text())["vae"] == ["diffusers", "AutoencoderKLWan"]
    vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae")
    expected = {k: v for k, v in tiny_vae_config().items() if k not in ("latents_mean", "latents_std")}
    assert {k: vae.config[k] for k in expected} == expected
    assert quick_vae.steps == QUICK_STEPS


def test_reconstructs_far_better_than_random(quick_vae, held_out):
    trained = AutoencoderKLWan.from_pretrained(quick_vae.path, subfolder="vae")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = AutoencoderKLWan(**tiny_vae_config())
    psnr = reconstruction_psnr(trained, held_out)
    assert psnr >= MIN_QUICK_PSNR
    assert psnr >= reconstruction_psnr(untrained, held_out) + MIN_GAIN_OVER_RANDOM
    assert quick_vae.psnr >= MIN_QUICK_PSNR


def test_normalised_latents_are_standard(quick_vae, held_out):
    vae = AutoencoderKLWan.from_pretrained(quick_vae.path, subfolder="vae")
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        latents = (vae.encode(held_out).latent_dist.mode() - mean) / std
    assert latents.shape == (64, 16, 1, 8, 8)
    per_channel = latents.transpose(0, 1).flatten(1)
    assert per_channel.mean(dim=1).abs().max() < 0.25
    assert ((per_channel.std(dim=1) - 1).abs() < 0.25).all()


def test_same_seed_same_weights(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    first = train_tiny_vae(tmp_path / "first", steps=3, batch_size=2)
    assert torch.equal(torch.rand(3), expected), "training must leave the caller's random state alone"
    assert torch.get_num_threads() == threads
    second = train_tiny_vae(tmp_path / "second", steps=3, batch_size=2)
    weights = Path("vae/diffusion_pytorch_model.safetensors")
    assert (first.path / weights).read_bytes() == (second.path / weights).read_bytes()
    assert (first.path / "vae/config.json").read_text() == (second.path / "vae/config.json").read_text()
    other = train_tiny_vae(tmp_path / "other", seed=1, steps=3, batch_size=2)
    assert (other.path / weights).read_bytes() != (first.path / weights).read_bytes()


def fake_trainer(calls: list[Path]):
    def train(directory, **kwargs):
        calls.append(Path(directory))
        (Path(directory) / "model_index.json").write_text("{}")

    return train


def test_cache_trains_once_per_setting(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tiny_vae, "train_tiny_vae", fake_trainer(calls))
    first = cached_trained_tiny_vae(tmp_path, steps=5)
    assert (first / "model_index.json").is_file() and len(calls) == 1
    assert cached_trained_tiny_vae(tmp_path, steps=5) == first and len(calls) == 1
    paths = {cached_trained_tiny_vae(tmp_path, steps=6), cached_trained_tiny_vae(tmp_path, seed=1, steps=5)}
    paths.add(cached_trained_tiny_vae(tmp_path, steps=5, learning_rate=1e-4))
    assert len(calls) == 4 and len(paths | {first}) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths | {first})


def test_cache_reuses_real_entry(tmp_path, monkeypatch):
    path = cached_trained_tiny_vae(tmp_path, steps=2, batch_size=2)
    AutoencoderKLWan.from_pretrained(path, subfolder="vae")

    def fail(*args, **kwargs):
        raise AssertionError("retrained a cached VAE")

    monkeypatch.setattr(tiny_vae, "train_tiny_vae", fail)
    assert cached_trained_tiny_vae(tmp_path, steps=2, batch_size=2) == path


def test_cache_keeps_entry_of_faster_builder(tmp_path, monkeypatch):
    calls = []
    train = fake_trainer(calls)

    def slow_train(directory, **kwargs):
        # Another process finishes the same entry while this one is still training.
        monkeypatch.setattr(tiny_vae, "train_tiny_vae", train)
        winner = cached_trained_tiny_vae(tmp_path, steps=5)
        (winner / "winner").touch()
        train(directory, **kwargs)

    monkeypatch.setattr(tiny_vae, "train_tiny_vae", slow_train)
    path = cached_trained_tiny_vae(tmp_path, steps=5)
    assert (path / "winner").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "the losing build must be cleaned up"


def test_default_cache_root(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tiny_vae, "train_tiny_vae", fake_trainer(calls))
    monkeypatch.setenv("THEWORLD_CACHE", str(tmp_path / "cache"))
    assert cached_trained_tiny_vae(steps=5).parent == tmp_path / "cache" / "tiny-vae"
    monkeypatch.delenv("THEWORLD_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cached_trained_tiny_vae(steps=5).parent == tmp_path / "home" / ".cache" / "theworld" / "tiny-vae"
