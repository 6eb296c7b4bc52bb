"""A checkpoint saved by an earlier release of TheWorld (world projector, boundary and position embeddings, LoRA on
q/v, tiny bases of seed 0) loads with this release and gives the logits it gave when it was saved."""

from pathlib import Path

import safetensors.torch
import torch

from theworld import TheWorld

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint-2026-12"


def test_checkpoint_saved_by_an_earlier_release_gives_the_same_logits(tiny_bases):
    expected = safetensors.torch.load_file(FIXTURE / "expected.safetensors")
    saved_logits = expected.pop("logits")  # the last positions' logits of the saved model
    model = TheWorld.from_pretrained(
        FIXTURE / "checkpoint",
        gemma_model_name_or_path=str(tiny_bases.gemma),
        cosmos_model_name_or_path=str(tiny_bases.cosmos),
    )
    assert model.config.lora_config is not None
    with torch.no_grad():
        logits = model(**expected).logits
    torch.testing.assert_close(logits[:, -saved_logits.shape[1] :], saved_logits, rtol=0, atol=1e-5)
