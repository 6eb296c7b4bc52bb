"""Sharing TheWorld checkpoints on the Hub: the model card, `theworld push` and `theworld info`."""

from .card import build_model_card, model_card_text
from .files import remote_code_hash
from .info import CheckpointInfo, checkpoint_info, format_info
from .push import push_checkpoint

__all__ = [
    "CheckpointInfo",
    "build_model_card",
    "checkpoint_info",
    "format_info",
    "model_card_text",
    "push_checkpoint",
    "remote_code_hash",
]
