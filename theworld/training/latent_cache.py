"""A disk cache of world latents: the frozen world encoder runs once per image; later epochs read the cache."""

import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data import load_image
from ..modeling_theworld import TheWorld
from ..processing_theworld import TheWorldProcessor


def world_encoder_fingerprint(model: TheWorld, processor: TheWorldProcessor) -> str:
    """Hash of everything that shapes a latent besides the image: the world encoder (type, plugin version, config,
    weights, dtype) and the preprocessing."""
    digest = hashlib.sha256()
    encoder = model.world_encoder
    settings = {
        "world_encoder_type": model.config.world_encoder_type,
        "world_encoder_plugin": model.config.world_encoder_plugin,
        "world_encoder_config": model.config.world_encoder_config,
        "world_image_size": processor.world_image_size,
        # The code that turns an image into world pixels, and pixels into latents: any change makes new latents.
        "preprocessing": inspect.getsource(type(processor).preprocess_world_images),
        "encoding": inspect.getsource(type(encoder).forward),
        "dtype": str(next(encoder.parameters()).dtype),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()


class WorldLatentCache:
    """Normalised world latents `(channels, frames, h, w)` keyed by image bytes and the world encoder's fingerprint.

    A different image, world encoder or preprocessing gives a different key, so a stale entry is never reused. Entries
    are written atomically, so several processes may fill the same cache.
    """

    def __init__(self, directory: str | os.PathLike, model: TheWorld, processor: TheWorldProcessor):
        self.directory = Path(directory)
        self.model = model
        self.processor = processor
        self.fingerprint = world_encoder_fingerprint(model, processor)
        self._memory: dict[str, torch.Tensor] = {}
        self._keys: dict[Path, str] = {}

    def key(self, image_path: Path) -> str:
        if image_path not in self._keys:
            digest = hashlib.sha256(self.fingerprint.encode())
            digest.update(Path(image_path).read_bytes())
            self._keys[image_path] = digest.hexdigest()
        return self._keys[image_path]

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def __contains__(self, image_path: Path) -> bool:
        key = self.key(image_path)
        return key in self._memory or self._file(key).exists()

    def get(self, image_path: Path) -> torch.Tensor:
        key = self.key(image_path)
        if key not in self._memory:
            file = self._file(key)
            if not file.exists():
                raise KeyError(f"No cached world latent for {image_path}; call WorldLatentCache.fill first.")
            self._memory[key] = load_file(file)["latent"]
        return self._memory[key]

    @torch.no_grad()
    def fill(self, image_paths: Sequence[Path], batch_size: int = 16, progress: bool = True) -> int:
        """Encodes every image not cached yet; returns how many were encoded."""
        missing = sorted({Path(path) for path in image_paths if Path(path) not in self})
        for start in tqdm(range(0, len(missing), batch_size), desc="world latents", disable=not progress):
            paths = missing[start : start + batch_size]
            pixels = self.processor.preprocess_world_images([load_image(path) for path in paths])
            latents = self.model.encode_world(pixels.to(self.model.device)).cpu()  # (n, z_dim, h, w)
            for path, latent in zip(paths, latents, strict=True):
                self._write(self.key(path), latent.contiguous())
        return len(missing)

    def _write(self, key: str, latent: torch.Tensor) -> None:
        file = self._file(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        os.close(handle)
        save_file({"latent": latent}, temporary)
        os.replace(temporary, file)
        self._memory[key] = latent
