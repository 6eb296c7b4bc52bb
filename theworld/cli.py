"""The `theworld` command."""

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

COMMANDS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}


def command(name: str, help: str):
    """Registers `add_arguments(parser)`; the parser's `run` default does the work."""

    def register(add_arguments: Callable[[argparse.ArgumentParser], None]):
        add_arguments.help = help
        COMMANDS[name] = add_arguments
        return add_arguments

    return register


@command("make-tiny-bases", "write tiny random Gemma 3 and Cosmos VAE base models (offline stand-ins)")
def _make_tiny_bases(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)

    def run(args: argparse.Namespace) -> None:
        from .tiny import make_tiny_bases

        bases = make_tiny_bases(args.directory, seed=args.seed)
        print(f"gemma:  {bases.gemma}\ncosmos: {bases.cosmos}")

    parser.set_defaults(run=run)


@command("make-small-real-base", "build the small real base: pretrained Gemma 3 270M in a Gemma 3 VLM layout")
def _make_small_real_base(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, help="where to keep it (default $THEWORLD_CACHE/small-real-base)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stand-in vision tower")

    def run(args: argparse.Namespace) -> None:
        from .small_real_base import cached_small_real_base

        print(cached_small_real_base(args.cache_dir, seed=args.seed))

    parser.set_defaults(run=run)


@command("synth-vsr", "write a synthetic data set in the VSR layout")
def _synth_vsr(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zero-shot", action="store_true", help="no object concept shared between train and test")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-dev", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=64)
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


@command("train", "fine-tune TheWorld on VSR (resumes an interrupted run in the same --output-dir)")
def _train(parser: argparse.ArgumentParser) -> None:
    from .training import TrainingConfig

    parser.add_argument("--gemma", required=True, help="Gemma 3 base: Hub id or local path")
    parser.add_argument("--cosmos", required=True, help="Cosmos-Predict2 repo with vae/: Hub id or local path")
    parser.add_argument("--data", dest="data_dir", type=Path, required=True, help="folder with train/dev.jsonl")
    parser.add_argument("--images", dest="images_dir", type=Path, help="image folder (default DATA/images)")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--lora-target-modules", nargs="+", default=None)
    parser.add_argument("--no-latent-cache", dest="use_latent_cache", action="store_false")
    parser.add_argument("--skip-bad-images", dest="on_bad_image", action="store_const", const="skip", default="error")
    parser.add_argument("--quiet", dest="progress", action="store_false")
    handled = {"data_dir", "images_dir", "output_dir", "lora_target_modules", "use_latent_cache", "on_bad_image"}
    handled |= {"progress", "gemma", "cosmos"}
    for field in dataclasses.fields(TrainingConfig):
        if field.name in handled:
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool:
            parser.add_argument(flag, action="store_true", default=field.default)
        else:
            kind = {int: int, float: float}.get(type(field.default), str)
            if field.name in ("max_steps", "eval_every", "lora_alpha"):
                kind = int
            parser.add_argument(flag, type=kind, default=field.default)

    def run(args: argparse.Namespace) -> None:
        from .training import train

        values = {k: v for k, v in vars(args).items() if k not in ("command", "run") and v is not None}
        result = train(TrainingConfig(**values))
        print(f"trained {result.steps} steps; checkpoint: {result.checkpoint}")

    parser.set_defaults(run=run)


@command("eval", "evaluate a checkpoint on a VSR jsonl file, world path on and ablated")
def _eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="a VSR jsonl file")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="JSON report; a Markdown table goes beside it")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")
    parser.add_argument("--skip-bad-images", dest="on_bad_image", action="store_const", const="skip", default="error")

    def run(args: argparse.Namespace) -> None:
        from .data import load_vsr_split
        from .modeling_theworld import TheWorld
        from .processing_theworld import TheWorldProcessor
        from .training import world_ablation_report, write_reports

        examples = load_vsr_split(args.data, args.images, on_bad_image=args.on_bad_image).examples[: args.limit]
        model = TheWorld.from_pretrained(args.checkpoint)
        processor = TheWorldProcessor.from_pretrained(args.checkpoint)
        report = world_ablation_report(model, processor, examples, batch_size=args.batch_size)
        json_path, markdown_path = write_reports({args.data.stem: report}, args.output)
        print(markdown_path.read_text())
        print(f"wrote {json_path} and {markdown_path}")

    parser.set_defaults(run=run)


@command("demo", "offline end-to-end demo: tiny bases, synthetic VSR, train, evaluate, reload, answer")
def _demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--relations", nargs="+", metavar="RELATION", help='caption relations (default: "close to" "far away from")'
    )
    parser.add_argument("--all-relations", action="store_true", help="captions with every synthetic relation")
    parser.add_argument("--quiet", dest="progress", action="store_false")

    def run(args: argparse.Namespace) -> None:
        from .data import SYNTH_RELATIONS
        from .demo import DEMO_RELATIONS, DemoConfig, run_demo

        relations = SYNTH_RELATIONS if args.all_relations else tuple(args.relations or DEMO_RELATIONS)
        config = DemoConfig(output_dir=args.output_dir, seed=args.seed, relations=relations, progress=args.progress)
        result = run_demo(config)
        print(result["summary"])
        print(f"wrote {args.output_dir}/checkpoint, eval.json, eval.md, summary.md, loss.png, accuracy.png")

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="theworld", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, add_arguments in COMMANDS.items():
        add_arguments(subparsers.add_parser(name, help=add_arguments.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"theworld {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
