"""Fine-tuning and evaluating TheWorld on VSR."""

from ..prompt import parse_answer, vsr_messages, vsr_prompt
from .checkpoint import save_checkpoint
from .evaluate import EvalResult, EvaluationConfig, evaluate_vsr, markdown_report, world_ablation_report, write_reports
from .latent_cache import WorldLatentCache
from .train import TrainingConfig, TrainingResult, train

__all__ = [
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
