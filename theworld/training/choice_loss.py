"""The answer loss as a choice between the answers: cross-entropy over the first tokens of "False" and "True" at the
position that predicts the answer, instead of over the whole vocabulary at every answer token."""

import torch
from torch import nn
from torch.nn import functional

from .collation import IGNORE_INDEX


def answer_choice_loss(model: nn.Module, batch: dict[str, torch.Tensor], answer_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each row's answer among `answer_ids` (first token of each answer, indexed by label).

    `batch` is a training batch (`labels` hold the answer's tokens, -100 elsewhere); each row's label is the answer its
    first labelled token starts.
    """
    inputs = {name: value for name, value in batch.items() if name != "labels"}
    labels = batch["labels"]  # (batch, seq)
    rows = torch.arange(labels.shape[0], device=labels.device)
    first_answer_token = (labels != IGNORE_INDEX).long().argmax(-1)  # (batch,)
    predicting = first_answer_token - 1  # the position whose logits predict it
    kept = torch.unique(predicting)  # sorted
    logits = model(**inputs, logits_to_keep=kept).logits  # (batch, len(kept), vocab)
    answer_logits = logits[rows, torch.searchsorted(kept, predicting)][:, answer_ids.to(logits.device)]  # (batch, 2)
    matches = labels[rows, first_answer_token].unsqueeze(-1) == answer_ids.to(labels.device)  # (batch, 2)
    if not matches.any(-1).all():
        raise ValueError(f"Some rows' answers start with none of the answer tokens {answer_ids.tolist()}")
    targets = matches.long().argmax(-1)  # (batch,)
    return functional.cross_entropy(answer_logits.float(), targets)
