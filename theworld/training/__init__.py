"""Fine-tuning and evaluating TheWorld on VSR."""

from ..prompt import parse_answer, vsr_messages, vsr_prompt
from .checkpoint import save_checkpoint
from .evaluate import (
    ANSWER_BY_LOSS,
    EvalResult,
    EvaluationConfig,
    evaluate_vsr,
    markdown_report,
    world_ablation_report,
    write_reports,
)
from .latent_cache import WorldLatentCache
from .train import TrainingConfig, TrainingResult, train

__all__ = [
    "ANSWER_BY_LOSS",
    "EvalResult",
    "EvaluationConfig",
    "TrainingConfig",
    "TrainingResult",
    "WorldLatentCache",
    "evaluate_vsr",
    "markdown_report",
    "parse_answer",
    "save_checkpoint",
    "train",
    "vsr_messages",
    "vsr_prompt",
    "world_ablation_report",
    "write_reports",
]
