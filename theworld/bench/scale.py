"""TheWorld at real scale without weights: the real base configurations built on the `meta` device.

`build_real_scale_model` builds Gemma 3 4B (`google/gemma-3-4b-it`) and a world encoder (by default the
Cosmos-Predict2 VAE, `nvidia/Cosmos-Predict2-2B-Video2World`, subfolder `vae`) from their published configurations
(shipped in `theworld/bench/real_configs/`) under `torch.device("meta")`: shapes and parameter counts are real, no
memory is allocated and nothing is downloaded. `parameter_report` gives the figures the docs quote;
`world_encoder_report` compares the world encoders; `python -m theworld.bench.scale` prints both.
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Gemma3Config, Gemma3ForConditionalGeneration

from ..configuration_theworld import PROJECTOR_TYPES, TheWorldConfig
from ..encoders_theworld import world_encoder_class
from ..markdown import markdown_table
from ..modeling_theworld import TheWorld

REAL_CONFIGS = Path(__file__).parent / "real_configs"
GEMMA_CONFIG_FILE = REAL_CONFIGS / "gemma-3-4b-it.config.json"


@dataclass(frozen=True)
class RealWorldEncoder:
    """A published world encoder: its type, repository and configuration file in `REAL_CONFIGS`."""

    encoder_type: str
    repository: str
    config_file: str


# The world encoders compared at real scale, by name; the first is TheWorld's default.
REAL_WORLD_ENCODERS = {
    "Cosmos-Predict2 VAE": RealWorldEncoder(
        "wan2.1", "nvidia/Cosmos-Predict2-2B-Video2World", "cosmos-predict2-2b-video2world.vae.config.json"
    ),
    "Wan 2.2 VAE": RealWorldEncoder("wan2.2", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "wan2.2-ti2v-5b.vae.config.json"),
    "SDXL VAE": RealWorldEncoder("autoencoder-kl", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl.vae.config.json"),
    "FLUX.1 VAE": RealWorldEncoder("autoencoder-kl", "black-forest-labs/FLUX.1-dev", "flux.1-dev.vae.config.json"),
    "V-JEPA 2 ViT-L": RealWorldEncoder(
        "vjepa2", "facebook/vjepa2-vitl-fpc64-256", "vjepa2-vitl-fpc64-256.config.json"
    ),
    "DINOv2 base": RealWorldEncoder("dinov2", "facebook/dinov2-base", "dinov2-base.config.json"),
}
DEFAULT_WORLD_ENCODER = next(iter(REAL_WORLD_ENCODERS))

# The real Gemma 3 tokenizer has 262,145 tokens (ids 0 to 262,144, the last one <image_soft_token>), so the three world
# tokens take the next ids: rows of the 262,208-row embedding matrix that no token uses.
REAL_WORLD_TOKEN_IDS = {"world_start_token_id": 262145, "world_token_id": 262146, "world_end_token_id": 262147}

# safetensors stores float32 as 4 bytes per value, after an 8-byte length and a JSON header padded to 8 bytes.
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
CHECKPOINT_METADATA = {"format": "pt"}  # what transformers' save_pretrained writes as `__metadata__`


def real_gemma_config() -> Gemma3Config:
    return Gemma3Config(**json.loads(GEMMA_CONFIG_FILE.read_text(encoding="utf-8")))


def real_world_encoder_config(name: str = DEFAULT_WORLD_ENCODER) -> dict[str, Any]:
    """The published configuration of the world encoder `name` (a key of `REAL_WORLD_ENCODERS`)."""
    return json.loads((REAL_CONFIGS / REAL_WORLD_ENCODERS[name].config_file).read_text(encoding="utf-8"))


def build_real_scale_model(
    world_grid_size: int = 16, world_encoder: str = DEFAULT_WORLD_ENCODER, **config_kwargs
) -> TheWorld:
    """TheWorld on the real Gemma 3 4B and world encoder `world_encoder` (a key of `REAL_WORLD_ENCODERS`)
    architectures, on the `meta` device (no weights).

    Keyword arguments are `TheWorldConfig` fields (e.g. `projector_type="linear"`, `world_image_size=256`); the world
    image size defaults to the encoder type's.
    """
    real = REAL_WORLD_ENCODERS[world_encoder]
    encoder_class = world_encoder_class(real.encoder_type)
    with torch.device("meta"):
        gemma = Gemma3ForConditionalGeneration(real_gemma_config())
        encoder = encoder_class.from_config(real_world_encoder_config(world_encoder))
        config = TheWorldConfig(
            gemma_config=gemma.config,
            world_encoder_type=real.encoder_type,
            world_encoder_name_or_path=real.repository,
            world_encoder_subfolder=encoder_class.default_subfolder,
            world_encoder_config=encoder.config,
            world_latent_channels=encoder.latent_channels,
            world_latent_frames=encoder.latent_frames,
            world_spatial_compression=encoder.spatial_compression,
            world_grid_size=world_grid_size,
            **{"world_image_size": encoder_class.default_image_size, **REAL_WORLD_TOKEN_IDS, **config_kwargs},
        )
        config.validate()
        return TheWorld(config, gemma=gemma, world_encoder=encoder)


def world_encoding_flops(model: TheWorld) -> int:
    """FLOPs of the world encoder on one image of the model's world image size (counted on the meta device)."""
    size = model.config.world_image_size
    counter = FlopCounterMode(display=False)
    with counter, torch.device("meta"):
        model.encode_world(torch.empty(1, 3, size, size))
    return counter.get_total_flops()


def world_encoder_report(world_grid_size: int = 16) -> list[dict[str, Any]]:
    """One row per published world encoder (`REAL_WORLD_ENCODERS`), on the real Gemma 3 4B: its parameters, world
    tokens per image, FLOPs per image and the size of a projector-only checkpoint. An encoder the installed libraries
    cannot build gets a row that says why."""
    rows = []
    for name, real in REAL_WORLD_ENCODERS.items():
        row: dict[str, Any] = {"world encoder": name, "type": real.encoder_type, "repository": real.repository}
        try:
            model = build_real_scale_model(world_grid_size, name)
        except ImportError as error:
            rows.append({**row, "unavailable": str(error)})
            continue
        report = parameter_report(model)
        rows.append(
            {
                **row,
                "encoder_parameters": report["world_encoder_parameters"],
                "world_image_size": model.config.world_image_size,
                "latent_grid": "x".join(map(str, model.config.world_latent_shape)),
                "world_tokens_per_image": model.config.num_world_tokens,
                "world_token_dim": model.config.world_token_dim,
                "encoder_flops_per_image": world_encoding_flops(model),
                "checkpoint_bytes": report["checkpoint_bytes"],
            }
        )
    return rows


def format_world_encoder_report(rows: list[dict[str, Any]]) -> str:
    """The world encoders as a Markdown table."""
    header = ["world encoder", "type", "parameters", "view (px)", "latent grid (CxFxHxW)", "tokens / image"]
    header += ["token dim", "encoder GFLOPs / image", "checkpoint (MiB)"]
    table = []
    for row in rows:
        if "unavailable" in row:
            table.append([row["world encoder"], row["type"], row["unavailable"], *[""] * (len(header) - 3)])
            continue
        table.append(
            [
                row["world encoder"],
                row["type"],
                f"{row['encoder_parameters'] / 1e6:,.1f}M",
                str(row["world_image_size"]),
                row["latent_grid"],
                str(row["world_tokens_per_image"]),
                f"{row['world_token_dim']:,}",
                f"{row['encoder_flops_per_image'] / 1e9:,.1f}",
                f"{row['checkpoint_bytes'] / 2**20:.2f}",
            ]
        )
    return markdown_table(header, table, numeric=2)


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
        gemma_parameters, world_encoder_parameters, world_parameters: the three parts of that total (a VAE keeps only
            its encoder side, `encoder` + `quant_conv`; world = projector + position and boundary embeddings).
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
        "world_encoder_parameters": count("world_encoder."),
        "world_parameters": count("world_projector.") + count("world_position_") + count("world_boundary_"),
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
        "world_encoder_type": config.world_encoder_type,
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
    parser.add_argument(
        "--world-encoder", default=DEFAULT_WORLD_ENCODER, choices=list(REAL_WORLD_ENCODERS), help="for the first table"
    )
    args = parser.parse_args(argv)
    config_kwargs = {"world_image_size": args.world_image_size, "projector_type": args.projector_type}
    config_kwargs = {key: value for key, value in config_kwargs.items() if value is not None}
    model = build_real_scale_model(args.world_grid_size, args.world_encoder, **config_kwargs)
    print(f"TheWorld on Gemma 3 4B and the {args.world_encoder}:\n")
    print(format_report(parameter_report(model)))
    print(f"\nWorld encoders, each on Gemma 3 4B with a {args.world_grid_size}x{args.world_grid_size} world grid:\n")
    print(format_world_encoder_report(world_encoder_report(args.world_grid_size)))


if __name__ == "__main__":
    main()


__all__ = [
    "build_real_scale_model",
    "parameter_report",
    "safetensors_header_bytes",
    "format_report",
    "world_encoder_report",
    "format_world_encoder_report",
]
