"""TheWorld: a frozen Gemma 3 that also sees a frozen Cosmos world model's latent view of each image."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_theworld import TheWorldConfig
from .hub.card import model_card_text
from .modeling_theworld import TheWorld
from .processing_theworld import TheWorldProcessor

AutoConfig.register(TheWorldConfig.model_type, TheWorldConfig, exist_ok=True)
AutoModel.register(TheWorldConfig, TheWorld, exist_ok=True)
AutoModelForImageTextToText.register(TheWorldConfig, TheWorld, exist_ok=True)
AutoProcessor.register(TheWorldConfig, TheWorldProcessor, exist_ok=True)
# `model.push_to_hub` writes TheWorld's model card; the modeling file (also the remote code) cannot import it itself.
TheWorld.model_card_builder = staticmethod(model_card_text)

__version__ = "0.1.0"
__all__ = ["TheWorld", "TheWorldConfig", "TheWorldProcessor"]
