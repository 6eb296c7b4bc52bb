"""TheWorld: a frozen Gemma 3 that also sees a frozen world model's latent view of each image (by default the VAE of
NVIDIA Cosmos-Predict2; see `encoders_theworld.py` for the others)."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_theworld import TheWorldConfig
from .modeling_theworld import TheWorld
from .processing_theworld import TheWorldProcessor

AutoConfig.register(TheWorldConfig.model_type, TheWorldConfig, exist_ok=True)
AutoModel.register(TheWorldConfig, TheWorld, exist_ok=True)
AutoModelForImageTextToText.register(TheWorldConfig, TheWorld, exist_ok=True)
AutoProcessor.register(TheWorldConfig, TheWorldProcessor, exist_ok=True)

__version__ = "0.1.0"
__all__ = ["TheWorld", "TheWorldConfig", "TheWorldProcessor"]
