"""Shared fixtures: tiny offline base models built once per test session."""

import pytest

from theworld import TheWorld, TheWorldProcessor
from theworld.tiny import TinyBases, make_tiny_bases

TINY_WORLD = {"world_image_size": 64, "world_grid_size": 2}


@pytest.fixture(scope="session")
def tiny_bases(tmp_path_factory: pytest.TempPathFactory) -> TinyBases:
    return make_tiny_bases(tmp_path_factory.mktemp("bases"))


@pytest.fixture()
def make_world(tiny_bases: TinyBases):
    """Builds a fresh, untrained TheWorld and its processor on the tiny bases; config fields may be overridden."""

    def build(**config_kwargs) -> tuple[TheWorld, TheWorldProcessor]:
        model = TheWorld.from_bases(tiny_bases.gemma, tiny_bases.cosmos, **{**TINY_WORLD, **config_kwargs})
        return model, TheWorldProcessor.from_model_config(model.config)

    return build
