"""Targets (PASS/MISS) and the Markdown tables of a benchmark result."""

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..markdown import markdown_table

KIB = 1024


@dataclass(frozen=True)
class Target:
    """A figure the benchmark checks: `value` must be at most (or, with `at_most=False`, at least) `limit`."""

    name: str
    value: float
    limit: float
    at_most: bool = True
    in_bytes: bool = False

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def measured_targets(figures: dict[str, Any]) -> list[Target]:
    training, loading = figures["training_step"], figures["loading"]
    tokens = training["world_tokens"]
    return [
        Target(
            f"training step, cached latents / Gemma <= 1.05 x floor ({tokens} world tokens)",
            training["ratios"]["theworld_cached_time"],
            1.05 * training["floor"],
        ),
        Target(
            f"peak memory, cached latents / Gemma ({tokens} world tokens)",
            training["ratios"]["theworld_cached_memory"],
            1.2,
        ),
        Target("decode per token, world on / off", figures["generation"]["ratios"]["decode_seconds_per_token"], 1.05),
        Target("load, checkpoint / bases alone", loading["ratio"], 1.10),
        Target("checkpoint bytes beyond trainable x 4", loading["weights_overhead_bytes"], 64 * KIB, in_bytes=True),
        Target("epoch speedup with the latent cache", figures["latent_cache"]["speedup"], 2.0, at_most=False),
    ]


def meta_targets(figures: dict[str, Any]) -> list[Target]:
    variants, name = figures["variants"], figures["default_variant"]
    default = variants[name]
    targets = [
        Target(
            f"checkpoint bytes beyond trainable x 4 ({other})",
            variant["checkpoint_overhead_bytes"],
            64 * KIB,
            in_bytes=True,
        )
        for other, variant in variants.items()
        if "checkpoint_overhead_bytes" in variant
    ]
    targets += [
        Target(f"estimated peak memory / Gemma ({name}, batch {size})", batch["memory_ratio"], 1.2)
        for size, batch in default["batches"].items()
    ]
    largest = default["batches"][max(default["batches"], key=int)]
    targets += [
        Target(
            f"training-step FLOPs, cached latents / Gemma <= 1.05 x floor ({name})",
            largest["flops_ratio"],
            1.05 * default["floor"],
        ),
        Target(f"decode bytes read per token / Gemma ({name}, estimate)", default["decode_ratio"], 1.05),
    ]
    return targets


def ratios(result: Any) -> Iterator[float]:
    """Every number stored under a key that names a ratio, a floor or a speedup."""
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, (int, float)) and any(word in key for word in ("ratio", "floor", "speedup")):
                yield value
            elif key == "ratios":
                yield from value.values()
            else:
                yield from ratios(value)
    elif isinstance(result, list):
        for value in result:
            yield from ratios(value)


def format_bytes(value: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def format_seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def targets_table(targets: list[dict[str, Any]]) -> str:
    rows = []
    for target in targets:
        value, limit = target["value"], target["limit"]
        shown = (format_bytes(value), format_bytes(limit)) if target["in_bytes"] else (f"{value:.3f}", f"{limit:.3f}")
        bound = "<=" if target["at_most"] else ">="
        rows.append([target["name"], shown[0], f"{bound} {shown[1]}", "PASS" if target["passed"] else "MISS"])
    return markdown_table(["target", "value", "limit", "result"], rows)


TRAINING_CASES = {
    "gemma": "Gemma 3 (multi_modal_projector trainable)",
    "theworld_cached": "TheWorld, cached latents",
    "theworld_vae": "TheWorld, VAE live",
    "theworld_checkpointed": "TheWorld, cached latents, gradient checkpointing",
    "theworld_answer_logits": "TheWorld, cached latents, logits only where labels are",
}
GENERATION_CASES = {
    "gemma": "Gemma 3 (world off)",
    "gemma_same_length": "Gemma 3, prompt left-padded to TheWorld's length",
    "theworld": "TheWorld (world on, VAE live)",
}
LOADERS = {
    "bases": "Gemma3ForConditionalGeneration + AutoencoderKLWan (bases alone)",
    "theworld": "AutoModel.from_pretrained(checkpoint, trust_remote_code=True)",
}


def training_section(training: dict[str, Any]) -> str:
    length, cases = training["sequence_length"], training["cases"]
    gemma = cases["gemma"]
    rows = [
        [
            label,
            format_seconds(cases[name]["seconds"]),
            f"{cases[name]['seconds'] / gemma['seconds']:.2f}x",
            format_bytes(cases[name]["resident_bytes"]),
            format_bytes(cases[name]["transient_bytes"]),
            format_bytes(cases[name]["peak_memory_bytes"]),
            f"{cases[name]['peak_memory_bytes'] / gemma['peak_memory_bytes']:.2f}x",
        ]
        for name, label in TRAINING_CASES.items()
    ]
    columns = ["model", "step (median)", "time ratio", "resident", "step peak on top", "peak memory", "memory ratio"]
    return (
        f"### 1. Training step (batch {training['batch_size']}, {training['world_tokens']} world tokens, sequence "
        f"L = {length['gemma']} -> L + N = {length['theworld']}, floor (L+N)/L = {training['floor']:.2f})\n\n"
        + markdown_table(columns, rows)
    )


def sweep_section(sweep: dict[str, Any]) -> str:
    rows = [
        [
            point["world_tokens"],
            f"{point['sequence_length']['gemma']} -> {point['sequence_length']['theworld']}",
            f"{point['floor']:.2f}x",
            f"{point['ratios']['theworld_cached_time']:.2f}x",
            f"{point['time_over_floor']:.2f}",
            f"{point['ratios']['theworld_cached_memory']:.2f}x",
        ]
        for point in sweep["points"]
    ]
    columns = ["world tokens", "sequence", "floor (L+N)/L", "time ratio", "time / floor", "memory ratio"]
    title = "### 2. World-token sweep (training step, cached latents, against Gemma)"
    return f"{title}\n\n" + markdown_table(columns, rows)


def generation_section(generation: dict[str, Any]) -> str:
    cases = generation["cases"]
    rows = [
        [
            label,
            cases[name]["context_tokens"],
            format_seconds(cases[name]["prefill_seconds"]),
            format_seconds(cases[name]["decode_seconds_per_token"]),
        ]
        for name, label in GENERATION_CASES.items()
    ]
    for label, key in (("TheWorld / Gemma", "ratios"), ("TheWorld / Gemma same length", "same_length_ratios")):
        ratio = generation[key]
        rows.append([label, "", f"{ratio['prefill_seconds']:.2f}x", f"{ratio['decode_seconds_per_token']:.2f}x"])
    columns = ["model", "context tokens", "prefill (to 1st token)", "decode per token"]
    title = f"### 3. Generation (greedy, KV cache, {generation['new_tokens']} new tokens, batch 1)"
    return f"{title}\n\n" + markdown_table(columns, rows)


def loading_section(loading: dict[str, Any]) -> str:
    rows = [[label, format_seconds(loading["cases"][name]["seconds"])] for name, label in LOADERS.items()]
    rows += [["difference", format_seconds(loading["overhead_seconds"])], ["ratio", f"{loading['ratio']:.2f}x"]]
    return (
        "### 4. Loading\n\n"
        + markdown_table(["load", "median"], rows)
        + f"\n\nmodel.safetensors: {loading['weights_bytes']:,} bytes = {loading['trainable_parameters']:,} trainable "
        f"parameters x 4 + {loading['weights_overhead_bytes']:,} bytes of header; whole checkpoint folder (config, "
        f"code, processor): {format_bytes(loading['checkpoint_folder_bytes'])}."
    )


def latent_cache_section(cache: dict[str, Any]) -> str:
    rows = [
        ["first epoch: fill the cache, then train", format_seconds(cache["first_epoch_seconds"])],
        ["later epoch, VAE live (no cache)", format_seconds(cache["cases"]["without_cache"]["seconds"])],
        ["later epoch, cached latents", format_seconds(cache["cases"]["with_cache"]["seconds"])],
        ["VAE encode of the epoch's images alone", format_seconds(cache["cases"]["vae_encode"]["seconds"])],
        ["speedup", f"{cache['speedup']:.2f}x"],
        ["VAE share of the uncached epoch", f"{cache['vae_share_of_uncached_epoch']:.0%}"],
    ]
    title = f"### 5. Latent cache (epoch of {cache['examples']} examples, batch {cache['batch_size']})"
    return f"{title}\n\n" + markdown_table(["epoch", "time (median)"], rows)


def measured_tables(figures: dict[str, Any]) -> list[str]:
    return [
        training_section(figures["training_step"]),
        sweep_section(figures["token_sweep"]),
        generation_section(figures["generation"]),
        loading_section(figures["loading"]),
        latent_cache_section(figures["latent_cache"]),
    ]


def parameters_section(variants: dict[str, Any]) -> str:
    rows = [
        [
            name,
            f"{variant['total_parameters']:,}",
            f"{variant['trainable_parameters']:,}",
            format_bytes(variant["checkpoint_bytes"]) if "checkpoint_bytes" in variant else "",
            f"{variant['checkpoint_overhead_bytes']:,} B" if "checkpoint_overhead_bytes" in variant else "",
        ]
        for name, variant in variants.items()
    ]
    columns = ["variant", "parameters", "trainable", "checkpoint", "beyond trainable x 4"]
    return "### Parameters and checkpoint (real configurations, meta device)\n\n" + markdown_table(columns, rows)


def memory_section(variants: dict[str, Any], text_tokens: int) -> str:
    rows = []
    for name, variant in variants.items():
        for size, batch in variant["batches"].items():
            memory = batch["memory"]
            rows.append(
                [
                    name,
                    size,
                    variant["sequence_length"],
                    format_bytes(memory["frozen_weights"]),
                    format_bytes(memory["trainable_weights"] + memory["gradients"] + memory["adam_states"]),
                    format_bytes(memory["activations"]),
                    format_bytes(memory["total"]),
                    f"{batch['memory_ratio']:.2f}x",
                    f"{variant['floor']:.2f}x",
                ]
            )
    columns = ["variant", "batch", "sequence", "frozen weights", "trainable, grads, Adam", "activations", "total"]
    return (
        f"### Estimated training memory (bf16 frozen weights, fp32 trainable weights + AdamW; {text_tokens} text "
        "tokens per example)\n\n" + markdown_table([*columns, "ratio", "floor (L+N)/L"], rows)
    )


def flops_section(variants: dict[str, Any]) -> str:
    rows = []
    for name, variant in variants.items():
        size = max(variant["batches"], key=int)
        batch = variant["batches"][size]
        rows.append(
            [
                name,
                size,
                f"{batch['step_flops'] / 1e12:.1f}",
                f"{batch['vae_flops'] / 1e12:.1f}",
                f"{batch['flops_ratio']:.2f}x",
                f"{batch['flops_ratio_with_vae']:.2f}x",
                f"{variant['floor']:.2f}x",
                f"{batch['vae_flops'] / (batch['step_flops'] + batch['vae_flops']):.1%}",
            ]
        )
    columns = ["variant", "batch", "step TFLOPs (cached latents)", "VAE TFLOPs", "ratio", "ratio with VAE"]
    return "### Training-step FLOPs (forward + backward, vision tower included)\n\n" + markdown_table(
        [*columns, "floor (L+N)/L", "VAE share"], rows
    )


def decode_section(variants: dict[str, Any]) -> str:
    rows = [
        [
            name,
            variant["sequence_length"],
            format_bytes(variant["decode_bytes_per_token"]["weights"]),
            format_bytes(variant["decode_bytes_per_token"]["kv_cache"]),
            f"{variant['decode_ratio']:.3f}x",
        ]
        for name, variant in variants.items()
    ]
    columns = ["variant", "context", "weights read", "KV cache read", "ratio"]
    title = "### Decode per token, memory-bound estimate (bytes read per step, bf16)"
    return f"{title}\n\n" + markdown_table(columns, rows)


def meta_tables(figures: dict[str, Any]) -> list[str]:
    variants = figures["variants"]
    return [
        parameters_section(variants),
        memory_section(variants, figures["text_tokens"]),
        flops_section(variants),
        decode_section(variants),
    ]


def format_result(result: dict[str, Any]) -> str:
    """The whole result as Markdown: settings line, one table per figure, the targets."""
    environment = result["environment"]
    header = (
        f"## theworld bench --preset {result['preset']}\n\n"
        f"torch {environment['torch']}, transformers {environment['transformers']}, diffusers "
        f"{environment['diffusers']}; device {environment['device']}, {environment['threads']} threads"
    )
    tables = meta_tables(result["figures"]) if result["preset"] == "real-meta" else measured_tables(result["figures"])
    return "\n\n".join([header, *tables, "### Targets\n\n" + targets_table(result["targets"])]) + "\n"
