"""`plexray train`, `plexray evaluate loss` (`evaluate behaviour`: plexray.evaluation.cli), `plexray merge`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plexray.errors import CheckpointError
from plexray.evaluation import cli as evaluation_cli
from plexray.settings import add_config_arguments, load_platform_config
from plexray.train.errors import TrainingDataError


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="LoRA (or full) fine-tuning with Ray Train; resumes a run by name")
    add_config_arguments(train)
    train.set_defaults(handler=_train)

    evaluate = subparsers.add_parser("evaluate", help="evaluate checkpoints: loss on a dataset (loss) or behaviour "
                                                      "in conversations (behaviour)")
    evaluations = evaluate.add_subparsers(dest="evaluation", required=True, metavar="SUBCOMMAND")
    loss = evaluations.add_parser("loss", help="loss components and accuracies of a checkpoint on a dataset")
    loss.add_argument("--checkpoint", type=Path, default=None,
                      help="training checkpoint (adapter or full weights) or standalone checkpoint directory; "
                           "default: the base model itself")
    loss.add_argument("--dataset", default=None, help="training-set directory (default: train.dataset)")
    loss.add_argument("--split", choices=["validation", "train", "all"], default="validation",
                      help="which conversations: the held-out split (train.validation_fraction), the rest, or all")
    loss.add_argument("--output", type=Path, default=None, help="also write the JSON report here")
    add_config_arguments(loss)
    loss.set_defaults(handler=_evaluate)
    evaluation_cli.register(evaluations)

    merge = subparsers.add_parser("merge", help="fold a LoRA adapter into the base model: a standalone checkpoint")
    merge.add_argument("checkpoint", type=Path, help="training checkpoint directory (holds adapter_config.json)")
    merge.add_argument("output", type=Path, help="new directory for the merged checkpoint")
    add_config_arguments(merge)
    merge.set_defaults(handler=_merge)


def _connect_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init()  # the cluster of RAY_ADDRESS (as under `ray job submit`), else a local one


def _train(args: argparse.Namespace) -> int:
    from plexray.train.run import run_training

    config = load_platform_config(args)
    _connect_ray()
    summary = run_training(config)
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from plexray.train.evaluate import evaluate_checkpoint, write_report

    config = load_platform_config(args)
    dataset = args.dataset or config.train.dataset
    # Refused before a cluster starts.
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        raise CheckpointError(f"checkpoint {args.checkpoint}: no such directory")
    if not Path(dataset).is_dir():
        raise TrainingDataError(f"dataset {dataset}: no such directory (set --dataset or train.dataset)")
    _connect_ray()
    result = evaluate_checkpoint(config, args.checkpoint, dataset, args.split)
    print(write_report(result, args.output))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from plexray.train.merge import merge_checkpoint

    config = load_platform_config(args)
    path = merge_checkpoint(config.model, args.checkpoint, args.output)
    print(json.dumps({"merged_checkpoint": str(path.resolve()), "from": str(args.checkpoint)}, indent=2))
    return 0
