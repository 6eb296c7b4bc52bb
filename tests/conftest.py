"""Shared fixtures: tiny offline base models built once per test session, and a Hub client for the fake Hub."""

from collections.abc import Iterator

import pytest
from huggingface_hub import constants

from theworld import TheWorld, TheWorldProcessor
from theworld.testing.tiny import TinyBases, make_tiny_bases

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


@pytest.fixture(scope="module")
def online_hub_client() -> Iterator[None]:
    """This process's own Hub client goes online (to a fake Hub at an explicit endpoint), whatever HF_HUB_OFFLINE
    says, and never fetches telemetry or its agent list from huggingface.co."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        yield
