"""The world-encoder contract check: what a plugin author runs on their encoder before publishing it.

```python
from theworld.world_encoder_check import check_world_encoder
check_world_encoder("my-encoder", "path/or/hub-id/of/its/weights")
```

It loads the encoder the way TheWorld does (built-in, or through its entry point, with the manifest checked) and
asserts each clause of the contract in `encoders_theworld.py`, raising `WorldEncoderContractError` that names the
clause broken. TheWorld's own tests run it on every built-in encoder and on the example plugin.
"""

import json
import os
from dataclasses import dataclass

import torch

from .encoders_theworld import world_encoder_class, world_encoder_plugin

# Class attributes every world encoder declares, with their types.
DECLARED_ATTRIBUTES = {
    "encoder_type": str,
    "description": str,
    "default_repository": str,
    "default_image_size": int,
    "architecture_keys": tuple,
    "api_version": int,
    "requires": dict,
}
DECLARED_PROPERTIES = ("latent_channels", "latent_frames", "spatial_compression")


class WorldEncoderContractError(AssertionError):
    """A world encoder breaks a clause of the world-encoder contract."""


@dataclass
class WorldEncoderCheck:
    """What the check found: the declared latent layout and the output of two test images."""

    encoder_type: str
    plugin: dict[str, str] | None
    latent_channels: int
    latent_frames: int
    spatial_compression: int
    image_size: int
    output_shape: tuple[int, ...]


def require(condition: bool, clause: str) -> None:
    if not condition:
        raise WorldEncoderContractError(clause)


def check_world_encoder(
    encoder_type: str,
    name_or_path: str | os.PathLike,
    subfolder: str | None = None,
    revision: str | None = None,
    image_size: int | None = None,
    **hub_kwargs,
) -> WorldEncoderCheck:
    """Loads world encoder `encoder_type` from `name_or_path` (default subfolder: the encoder's own) and checks it
    against the contract on two random images of `image_size` pixels (default: twice the spatial compression)."""
    encoder_class = world_encoder_class(encoder_type)  # also checks the manifest
    for name, kind in DECLARED_ATTRIBUTES.items():
        require(
            isinstance(getattr(encoder_class, name, None), kind), f"class attribute {name} must be a {kind.__name__}"
        )
    require(
        encoder_class.encoder_type == encoder_type, f"encoder_type is {encoder_class.encoder_type!r}, not the name"
    )
    require(hasattr(encoder_class, "default_subfolder"), "class attribute default_subfolder must exist (None: none)")
    if subfolder is None:
        subfolder = encoder_class.default_subfolder
    encoder = encoder_class.from_pretrained(name_or_path, subfolder=subfolder, revision=revision, **hub_kwargs)
    require(isinstance(encoder, torch.nn.Module), "from_pretrained must return a torch.nn.Module")
    require(all(not p.requires_grad for p in encoder.parameters()), "the encoder must be frozen (requires_grad False)")
    declared = {name: getattr(encoder, name) for name in DECLARED_PROPERTIES}
    for name, value in declared.items():
        require(isinstance(value, int) and value > 0, f"{name} must be a positive int, got {value!r}")
    config = encoder.config
    require(isinstance(config, dict), "config must be a dict")
    require(json.loads(json.dumps(config)) == config, "config must survive a JSON round trip (it goes in config.json)")

    compression = declared["spatial_compression"]
    image_size = image_size or 2 * compression
    side = image_size // compression
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, image_size, image_size, generator=generator) * 2 - 1  # [-1, 1]
    with torch.no_grad():
        latents = encoder(pixels)
        again = encoder(pixels)
        first_alone = encoder(pixels[:1])
    expected = (2, declared["latent_channels"], declared["latent_frames"], side, side)
    require(
        tuple(latents.shape) == expected,
        f"{image_size}px images must give latents of shape (n, channels, frames, h, w) = {expected}, "
        f"got {tuple(latents.shape)}",
    )
    require(latents.is_floating_point() and bool(torch.isfinite(latents).all()), "latents must be finite floats")
    require(torch.equal(latents, again), "encoding must be deterministic (no sampling, eval mode)")
    torch.testing.assert_close(
        first_alone[0], latents[0], rtol=1e-4, atol=1e-4, msg="images must not affect each other"
    )
    require(not torch.equal(latents[0], latents[1]), "different images must give different latents")
    scale = latents.float().std().item()
    require(1e-3 < scale < 1e3, f"latents must be normalised (roughly unit scale); their std is {scale:.3g}")
    try:
        encoder(torch.zeros(1, 3, image_size + 1, image_size + 1))
    except ValueError:
        pass
    else:
        raise WorldEncoderContractError(f"a side that is not a multiple of {compression} must raise a ValueError")

    rebuilt = encoder_class.from_config(config)
    shapes = {name: tuple(p.shape) for name, p in encoder.state_dict().items()}
    rebuilt_shapes = {name: tuple(p.shape) for name, p in rebuilt.state_dict().items()}
    require(shapes == rebuilt_shapes, "from_config(encoder.config) must rebuild the same architecture")
    return WorldEncoderCheck(
        encoder_type=encoder_type,
        plugin=world_encoder_plugin(encoder_type),
        image_size=image_size,
        output_shape=tuple(latents.shape),
        **declared,
    )


__all__ = ["WorldEncoderCheck", "WorldEncoderContractError", "check_world_encoder"]
