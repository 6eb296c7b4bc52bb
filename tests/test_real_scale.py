"""TheWorld at the real scale (Gemma 3 4B + the Cosmos-Predict2 VAE), built on the meta device without weights."""

import json

import pytest
import torch
from diffusers import AutoencoderKLWan
from transformers import Gemma3ForConditionalGeneration
from world_inputs import perturb_trainable

from theworld import TheWorld
from theworld.bench.scale import (
    GEMMA_CONFIG_FILE,
    REAL_WORLD_ENCODERS,
    REAL_WORLD_TOKEN_IDS,
    build_real_scale_model,
    format_report,
    main,
    parameter_report,
    real_gemma_config,
    real_world_encoder_config,
    safetensors_header_bytes,
)

# Published figures of the two bases (see theworld/bench/real_configs and DESIGN.md).
GEMMA_3_4B_PARAMETERS = 4_300_079_472
COSMOS_VAE_ENCODER_PARAMETERS = 53_596_928  # encoder + quant_conv of the 126,892,531-parameter VAE
GEMMA_3_4B_EMBEDDING_ROWS = 262_208
GEMMA_3_TOKENIZER_TOKENS = 262_145


@pytest.fixture(scope="module")
def real_model() -> TheWorld:
    return build_real_scale_model()


def world_parameter_count(hidden: int, token_dim: int, projector_type: str, num_world_tokens: int) -> int:
    """Projector (Linear(token_dim, hidden) [+ GELU + Linear(hidden, hidden)]), two boundary embeddings and one
    position embedding per world token."""
    projector = token_dim * hidden + hidden
    if projector_type == "mlp":
        projector += hidden * hidden + hidden
    return projector + 2 * hidden + num_world_tokens * hidden


def test_real_configs_ship_with_the_package():
    assert json.loads(GEMMA_CONFIG_FILE.read_text())["model_type"] == "gemma3"
    assert real_world_encoder_config()["_class_name"] == "AutoencoderKLWan"


def test_real_scale_parameter_counts(real_model):
    report = parameter_report(real_model)
    print("\n" + format_report(report))
    assert all(p.device.type == "meta" for p in real_model.parameters()), "no weights may be allocated"

    config = real_model.config
    hidden = config.get_text_config().hidden_size
    vae = real_world_encoder_config()
    latent_side = config.world_image_size // 2 ** len(vae["temperal_downsample"])
    token_dim = vae["z_dim"] * (latent_side // config.world_grid_size) ** 2
    assert (hidden, config.num_world_tokens, token_dim) == (2560, 16 * 16, config.world_token_dim)

    world = world_parameter_count(hidden, token_dim, config.projector_type, config.num_world_tokens)
    assert report["gemma_parameters"] == GEMMA_3_4B_PARAMETERS
    assert report["world_encoder_parameters"] == COSMOS_VAE_ENCODER_PARAMETERS
    assert report["world_parameters"] == world
    assert report["total_parameters"] == GEMMA_3_4B_PARAMETERS + COSMOS_VAE_ENCODER_PARAMETERS + world
    assert report["trainable_parameters"] == world
    assert report["trainable_share"] == world / report["total_parameters"] < 0.01
    assert report["trainable_dtypes"] == ["float32"]

    # The same counts from the base classes themselves, built independently.
    with torch.device("meta"):
        gemma = Gemma3ForConditionalGeneration(real_gemma_config())
        full_vae = AutoencoderKLWan.from_config(vae)
    assert sum(p.numel() for p in gemma.parameters()) == report["gemma_parameters"]
    encoder_side = [full_vae.encoder, full_vae.quant_conv]
    assert sum(p.numel() for part in encoder_side for p in part.parameters()) == report["world_encoder_parameters"]
    vae = real_model.world_encoder.model
    assert vae.decoder is None and vae.post_quant_conv is None


def test_real_scale_embedding_is_never_resized(real_model):
    report = parameter_report(real_model)
    assert report["embedding_rows"] == GEMMA_3_4B_EMBEDDING_ROWS
    assert real_model.gemma.lm_head.weight.shape[0] == GEMMA_3_4B_EMBEDDING_ROWS
    ids = sorted(REAL_WORLD_TOKEN_IDS.values())
    assert ids == list(range(GEMMA_3_TOKENIZER_TOKENS, GEMMA_3_TOKENIZER_TOKENS + 3)), "the next free tokenizer ids"
    assert ids[-1] < report["embedding_rows"]
    real_model.config.validate_world_token_ids()


def test_real_scale_checkpoint_size(real_model):
    report = parameter_report(real_model)
    assert report["checkpoint_tensor_bytes"] == 4 * report["trainable_parameters"]
    # Header: 8-byte length + about a hundred bytes of JSON per tensor.
    assert 8 < report["checkpoint_header_bytes"] <= 8 + 128 * (report["checkpoint_tensors"] + 1)
    assert report["checkpoint_bytes"] == report["checkpoint_tensor_bytes"] + report["checkpoint_header_bytes"]
    assert report["checkpoint_bytes"] < 32 * 2**20, "a few-MB checkpoint, not a copy of the bases"


def test_checkpoint_size_formula_matches_a_saved_checkpoint(make_world, tmp_path):
    model, _ = make_world()
    perturb_trainable(model)
    model.save_pretrained(tmp_path)
    report = parameter_report(model)
    assert (tmp_path / "model.safetensors").stat().st_size == report["checkpoint_bytes"]
    assert report["checkpoint_tensor_bytes"] == 4 * report["trainable_parameters"]
    header = safetensors_header_bytes(model.trainable_state_dict(), {"format": "pt"})
    assert report["checkpoint_header_bytes"] == header


@pytest.mark.parametrize(
    ("grid", "config"),
    [(8, {}), (16, {"projector_type": "linear"}), (32, {"world_image_size": 256})],
    ids=["grid-8", "linear", "grid-32-at-256px"],
)
def test_real_scale_world_layouts(grid, config):
    model = build_real_scale_model(world_grid_size=grid, **config)
    report = parameter_report(model)
    hidden = model.config.get_text_config().hidden_size
    latent_side = model.config.world_image_size // model.config.world_spatial_compression
    token_dim = 16 * (latent_side // grid) ** 2
    assert report["num_world_tokens"] == grid * grid
    assert report["trainable_parameters"] == world_parameter_count(
        hidden, token_dim, model.config.projector_type, model.config.num_world_tokens
    )


def test_scale_module_prints_a_table(capsys):
    main(["--world-grid-size", "8", "--projector-type", "linear"])
    table = capsys.readouterr().out
    report = parameter_report(build_real_scale_model(8, projector_type="linear"))
    assert "\n| quantity | value |" in table
    assert f"| total_parameters | {report['total_parameters']:,} |" in table
    assert f"| trainable_parameters | {report['trainable_parameters']:,} |" in table
    assert "| embedding_rows | 262,208 |" in table


def test_scale_module_compares_every_world_encoder_at_real_scale(capsys):
    main(["--world-grid-size", "16"])
    output = capsys.readouterr().out
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|\n").split("|")]
        for line in output.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in REAL_WORLD_ENCODERS
    }
    assert set(rows) == set(REAL_WORLD_ENCODERS)
    for name, cells in rows.items():
        assert cells[1] == REAL_WORLD_ENCODERS[name].encoder_type
        assert cells[5] == "256", name  # a 16 x 16 grid of world tokens for every encoder
        assert float(cells[7].replace(",", "")) > 0, name
    # Encoder sizes the models' papers state: ViT-L (V-JEPA 2) about 300M, ViT-B (DINOv2) 86M, SD VAE encoder 34M.
    assert rows["V-JEPA 2 ViT-L"][2] == "303.9M"
    assert rows["DINOv2 base"][2] == "86.6M"
    assert rows["SDXL VAE"][2] == "34.2M"
    assert rows["Cosmos-Predict2 VAE"][4] == "16x1x64x64" and rows["Wan 2.2 VAE"][4] == "48x1x32x32"
