"""A trained tiny stand-in for the Cosmos-Predict2 VAE, for tests and demos whose world latents must carry information.

`make_tiny_bases` writes a random tiny `AutoencoderKLWan`; its latents say little about the image. `train_tiny_vae`
trains the same architecture as an autoencoder on synthetic two-shape scenes (a couple of CPU minutes) and writes it
in the layout of the real Cosmos-Predict2 repository, with `latents_mean` and `latents_std` measured so that
normalised latents are roughly standard normal, as the real constants make them for the real VAE.
`cached_trained_tiny_vae` builds it once per setting and keeps it in a cache folder.
"""

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MethodType

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from tqdm.auto import tqdm

from ..data.synth import random_scene
from .build_cache import build_once, cache_root
from .tiny import tiny_vae_config, write_vae_repository

__all__ = [
    "DEFAULT_STEPS",
    "QUICK_STEPS",
    "TinyVAEReport",
    "cached_trained_tiny_vae",
    "reconstruction_psnr",
    "scene_pixels",
    "train_tiny_vae",
]

# Bump when a change to the training recipe makes previously cached VAEs stale.
FORMAT_VERSION = 1

DEFAULT_STEPS = 600  # about 2 minutes on one CPU core; 25 to 27 dB held-out PSNR
QUICK_STEPS = 150  # about 30 seconds; 18 to 20 dB, for tests that only need informative latents
DEFAULT_BATCH_SIZE = 8
DEFAULT_LEARNING_RATE = 1e-3
KL_WEIGHT = 1e-6
WARMUP_FRACTION = 0.1  # linear warm-up over the first steps
DECAY_FRACTION = 0.25  # cosine decay to zero over the last steps
MAX_GRAD_NORM = 1.0
# PyTorch's default init scales each causal convolution by its 3D fan-in, but a single frame meets only the last
# temporal tap; scaling that tap up trains far faster (23 dB instead of 19 dB after 400 steps of otherwise equal runs).
SINGLE_FRAME_INIT_GAIN = 3.0
# One thread: the weights then do not depend on the machine's core count (the cache key leaves it out), and on a
# small shared machine a second thread cost more in contention than it saved.
NUM_THREADS = 1

NUM_STATS_SCENES = 256  # scenes whose latents give latents_mean and latents_std
NUM_EVAL_SCENES = 128  # held-out scenes for the reported PSNR
HELD_OUT_SEED = "theworld-tiny-vae:held-out"


@dataclass(frozen=True)
class TinyVAEReport:
    """What `train_tiny_vae` built: the repository folder, the training steps, the wall-clock seconds the whole build
    took, and the reconstruction PSNR (dB) on held-out scenes."""

    path: Path
    steps: int
    seconds: float
    psnr: float


def scene_pixels(rng: random.Random, num_scenes: int, image_size: int = 64) -> torch.Tensor:
    """`num_scenes` random synthetic scenes as VAE input: shape (num_scenes, 3, 1, size, size), values in [-1, 1]."""
    images = np.stack([np.asarray(random_scene(rng, image_size)) for _ in range(num_scenes)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).unsqueeze(2).float().div(127.5).sub(1.0)


@torch.no_grad()
def _latent_means(vae: AutoencoderKLWan, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Unnormalised posterior means, (n, z_dim, 1, h, w), encoded in batches."""
    return torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in pixels.split(batch_size)])


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKLWan, pixels: torch.Tensor, batch_size: int = 64) -> float:
    """PSNR (dB) of `vae` reconstructing `pixels` (values in [-1, 1]) through its latent means."""
    squared_error = 0.0
    for chunk in pixels.split(batch_size):
        reconstruction = vae.decode(vae.encode(chunk).latent_dist.mode()).sample
        squared_error += (reconstruction - chunk).square().sum().item()
    return 10 * math.log10(4.0 / (squared_error / pixels.numel()))


def _single_frame_forward(self: WanCausalConv3d, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    """`WanCausalConv3d.forward` on one uncached frame, computed as the 2D convolution it reduces to (twice as fast).

    Causal padding puts `kernel_size[0] - 1` zero frames before the only frame, so only the last temporal tap of the
    kernel sees it; the result is the same up to rounding.
    """
    if x.shape[2] != 1 or cache_x is not None or self._padding[4] != self.kernel_size[0] - 1:
        return WanCausalConv3d.forward(self, x, cache_x)
    x = F.pad(x[:, :, 0], self._padding[:4])
    return F.conv2d(x, self.weight[:, :, -1], self.bias, self.stride[1:]).unsqueeze(2)


@torch.no_grad()
def _init_single_frame_taps(vae: AutoencoderKLWan) -> None:
    """Scale the temporal kernel tap that single frames meet by `SINGLE_FRAME_INIT_GAIN`."""
    for module in vae.modules():
        if isinstance(module, WanCausalConv3d):
            module.weight[:, :, -1] *= SINGLE_FRAME_INIT_GAIN


@contextmanager
def _single_frame_convolutions(vae: AutoencoderKLWan) -> Iterator[None]:
    """Run the causal 3D convolutions of `vae` on single frames as 2D convolutions while inside the block."""
    convolutions = [module for module in vae.modules() if isinstance(module, WanCausalConv3d)]
    for module in convolutions:
        module.forward = MethodType(_single_frame_forward, module)
    try:
        yield
    finally:
        for module in convolutions:
            del module.forward


def _learning_rate_factor(step: int, steps: int) -> float:
    """Warm-up, constant, then cosine decay to zero."""
    warmup, decay_start = max(1, round(WARMUP_FRACTION * steps)), (1 - DECAY_FRACTION) * steps
    if step < warmup:
        return (step + 1) / warmup
    if step < decay_start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - decay_start) / (steps - decay_start)))


@contextmanager
def _num_threads(num_threads: int) -> Iterator[None]:
    """Use `num_threads` intra-op threads inside the block, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_tiny_vae(
    directory: str | os.PathLike,
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    image_size: int = 64,
    progress: bool = False,
) -> TinyVAEReport:
    """Train the tiny `AutoencoderKLWan` of `tiny_vae_config()` as an autoencoder on synthetic scenes and write it to
    `directory` (`model_index.json`, `vae/config.json`, `vae/diffusion_pytorch_model.safetensors`).

    The loss is the mean squared reconstruction error through a posterior sample plus a small KL term, minimised with
    Adam (gradient clipping, warm-up, cosine decay at the end) on freshly drawn scenes. The saved `latents_mean` and
    `latents_std` are the per-channel statistics of the trained encoder's latent means. The same arguments give the
    same weights; the caller's random state and thread count are left as they were.
    """
    start = time.perf_counter()
    directory = Path(directory)
    with torch.random.fork_rng(devices=[]), _num_threads(NUM_THREADS):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**tiny_vae_config())
        _init_single_frame_taps(vae)
        optimizer = torch.optim.Adam(vae.parameters(), lr=learning_rate)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(step, steps))
        rng = random.Random(f"theworld-tiny-vae:{seed}:train")
        with _single_frame_convolutions(vae):
            for _ in tqdm(range(steps), desc="Training tiny VAE", disable=not progress):
                pixels = scene_pixels(rng, batch_size, image_size)
                posterior = vae.encode(pixels).latent_dist
                reconstruction = vae.decode(posterior.sample()).sample
                loss = F.mse_loss(reconstruction, pixels) + KL_WEIGHT * posterior.kl().mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(vae.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                schedule.step()
            vae.eval()
            stats_rng = random.Random(f"theworld-tiny-vae:{seed}:stats")
            latents = _latent_means(vae, scene_pixels(stats_rng, NUM_STATS_SCENES, image_size)).transpose(0, 1)
            latents = latents.reshape(latents.shape[0], -1)
            vae.register_to_config(
                latents_mean=[round(value, 4) for value in latents.mean(dim=1).tolist()],
                latents_std=[round(value, 4) for value in latents.std(dim=1).tolist()],
            )
            psnr = reconstruction_psnr(vae, scene_pixels(random.Random(HELD_OUT_SEED), NUM_EVAL_SCENES, image_size))
    write_vae_repository(vae, directory)
    return TinyVAEReport(path=directory, steps=steps, seconds=time.perf_counter() - start, psnr=psnr)


def cached_trained_tiny_vae(
    cache_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    image_size: int = 64,
    progress: bool = False,
) -> Path:
    """The folder of a `train_tiny_vae` repository for these arguments, trained only if the cache lacks it.

    Entries live under `cache_dir` (default `$THEWORLD_CACHE/tiny-vae`, else `~/.cache/theworld/tiny-vae`), named by
    a hash of the architecture, the training arguments and `FORMAT_VERSION`. Each is built in a temporary folder
    beside it and renamed into place, so concurrent builders never see or leave a partial entry; if another builder
    finishes first, its entry is kept.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root("tiny-vae")
    training = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "image_size": image_size,
    }
    settings = {"architecture": tiny_vae_config(), **training, "format_version": FORMAT_VERSION}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    target = root / f"seed{seed}-steps{steps}-{key}"
    return build_once(target, lambda folder: train_tiny_vae(folder, **training, progress=progress))
