"""TheWorld at real scale without weights: the real base configurations built on the `meta` device.

`build_real_scale_model` builds Gemma 3 4B (`google/gemma-3-4b-it`) and the Cosmos-Predict2 VAE
(`nvidia/Cosmos-Predict2-2B-Video2World`, subfolder `vae`) from their published configurations (shipped in
`theworld/bench/real_configs/`) under `torch.device("meta")`: shapes and parameter counts are real, no memory is
allocated and nothing is downloaded. `parameter_report` gives the figures the docs quote;
`python -m theworld.bench.scale` prints them.
"""

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan
from transformers import Gemma3Config, Gemma3ForConditionalGeneration

from ..configuration_theworld import PROJECTOR_TYPES, TheWorldConfig, vae_config_fields
from ..markdown import markdown_table
from ..modeling_theworld import TheWorld

REAL_CONFIGS = Path(__file__).parent / "real_configs"
GEMMA_CONFIG_FILE = REAL_CONFIGS / "gemma-3-4b-it.config.json"
VAE_CONFIG_FILE = REAL_CONFIGS / "cosmos-predict2-2b-video2world.vae.config.json"

# The real Gemma 3 tokenizer has 262,145 tokens (ids 0 to 262,144, the last one <image_soft_token>), so the three world
# tokens take the next ids: rows of the 262,208-row embedding matrix that no token uses.
REAL_WORLD_TOKEN_IDS = {"world_start_token_id": 262145, "world_token_id": 262146, "world_end_token_id": 262147}

# safetensors stores float32 as 4 bytes per value, after an 8-byte length and a JSON header padded to 8 bytes.
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
CHECKPOINT_METADATA = {"format": "pt"}  # what transformers' save_pretrained writes as `__metadata__`


def real_gemma_config() -> Gemma3Config:
    return Gemma3Config(**json.loads(GEMMA_CONFIG_FILE.read_text(encoding="utf-8")))


def real_vae_config() -> dict[str, Any]:
    config = json.loads(VAE_CONFIG_FILE.read_text(encoding="utf-8"))
    return vae_config_fields(config)


def build_real_scale_model(world_grid_size: int = 16, **config_kwargs) -> TheWorld:
    """TheWorld on the real Gemma 3 4B and Cosmos-Predict2 VAE architectures, on the `meta` device (no weights).

    Keyword arguments are `TheWorldConfig` fields (e.g. `projector_type="linear"`, `world_image_size=256`).
    """
    with torch.device("meta"):
        gemma = Gemma3ForConditionalGeneration(real_gemma_config())
        vae = AutoencoderKLWan(**real_vae_config())
        config = TheWorldConfig(
            gemma_config=gemma.config,
            vae_config=vae_config_fields(vae.config),
            world_grid_size=world_grid_size,
            **{**REAL_WORLD_TOKEN_IDS, **config_kwargs},
        )
        config.validate()
        return TheWorld(config, gemma=gemma, vae=vae)


def safetensors_header_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> int:
    """Bytes a safetensors file spends before the tensor data: the 8-byte header length plus the JSON header.

    Mirrors the `safetensors` writer: tensors sorted by name (all of one dtype), compact JSON, `__metadata__` first,
    header padded with spaces to a multiple of 8 bytes.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    length = len(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    return 8 + length + (-length) % 8


def parameter_report(model: TheWorld) -> dict[str, Any]:
    """Parameter counts and checkpoint size of a TheWorld (on any device, `meta` included).

    Returns:
        total_parameters: every parameter (shared ones, like Gemma's tied embedding and LM head, counted once).
        gemma_parameters, vae_encoder_parameters, world_parameters: the three parts of that total (the VAE keeps only
            its encoder side, `encoder` + `quant_conv`; world = projector + boundary embeddings).
        trainable_parameters, trainable_share: what trains (and is saved), and its share of the total.
        checkpoint_tensor_bytes: trainable parameters x bytes per value (4 in fp32).
        checkpoint_header_bytes: the safetensors header (8-byte length + JSON naming each tensor, padded to 8).
        checkpoint_bytes: size of `model.safetensors` = tensor bytes + header bytes.
        embedding_rows, tokenizer_tokens_bound: rows of Gemma's embedding matrix; the world token ids must stay below.
    """
    parameters = dict(model.named_parameters())
    trainable = model.trainable_state_dict()

    def count(prefix: str) -> int:
        return sum(p.numel() for name, p in parameters.items() if name.startswith(prefix))

    total = sum(p.numel() for p in parameters.values())
    trainable_count = sum(p.numel() for p in trainable.values())
    tensor_bytes = sum(p.numel() * p.element_size() for p in trainable.values())
    header_bytes = safetensors_header_bytes(trainable, CHECKPOINT_METADATA)
    config = model.config
    return {
        "total_parameters": total,
        "gemma_parameters": count("gemma."),
        "vae_encoder_parameters": count("vae."),
        "world_parameters": count("world_"),
        "trainable_parameters": trainable_count,
        "trainable_share": trainable_count / total,
        "trainable_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in trainable.values()}),
        "checkpoint_tensors": len(trainable),
        "checkpoint_tensor_bytes": tensor_bytes,
        "checkpoint_header_bytes": header_bytes,
        "checkpoint_bytes": tensor_bytes + header_bytes,
        "embedding_rows": model.get_input_embeddings().weight.shape[0],
        "hidden_size": config.get_text_config().hidden_size,
        "num_world_tokens": config.num_world_tokens,
        "world_token_dim": config.world_token_dim,
        "world_image_size": config.world_image_size,
        "projector_type": config.projector_type,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    rows = []
    for key, value in report.items():
        if isinstance(value, float):
            text = f"{value:.4%}" if key.endswith("share") else f"{value:.4g}"
        elif isinstance(value, int):
            text = f"{value:,}"
            if key.endswith("bytes") and value >= 2**20:
                text += f" ({value / 2**20:.2f} MiB)"
        elif isinstance(value, list):
            text = ", ".join(map(str, value))
        else:
            text = str(value)
        rows.append([key, text])
    return markdown_table(["quantity", "value"], rows, numeric=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-grid-size", type=int, default=16)
    parser.add_argument("--world-image-size", type=int, default=None)
    parser.add_argument("--projector-type", default=None, choices=list(PROJECTOR_TYPES))
    args = parser.parse_args(argv)
    config_kwargs = {"world_image_size": args.world_image_size, "projector_type": args.projector_type}
    model = build_real_scale_model(args.world_grid_size, **{k: v for k, v in config_kwargs.items() if v is not None})
    print(format_report(parameter_report(model)))


if __name__ == "__main__":
    main()


__all__ = ["build_real_scale_model", "parameter_report", "safetensors_header_bytes", "format_report"]
