"""Ray job entry point: evaluate checkpoints, by loss on a dataset or by behaviour in conversations.

    ray job submit --working-dir . -- python jobs/evaluate.py loss --checkpoint $CHECKPOINT \
        --config configs/train-demo.yaml --set train.dataset=$PWD/artifacts/demo/data
    ray job submit --working-dir . -- python jobs/evaluate.py behaviour --compare demo $CHECKPOINT \
        --output $PWD/artifacts/demo/behaviour --config configs/demo.yaml

Same as `plexray evaluate loss` / `plexray evaluate behaviour`; arguments are passed through (--config FILE,
--set KEY=VALUE). loss: --checkpoint DIR --dataset DIR [--split validation|train|all] [--output FILE]; prints
JSON. behaviour: [--checkpoint REF | --compare BASE TUNED] [--test-set DIR] [--output DIR]; writes report.json
and report.md in the output directory (default evaluation.output_dir) and prints a JSON summary.
Every path (the dataset defaults to train.dataset, the behaviour output to evaluation.output_dir) must be
absolute: see job_paths.py. `demo` and hf://... checkpoints are not paths.
"""

import argparse
import sys

from job_paths import platform_config, require_absolute
from plexray.cli import main

NOT_PATHS = ("demo",)  # checkpoint references that name no directory

if __name__ == "__main__":
    paths = argparse.ArgumentParser(add_help=False)
    paths.add_argument("evaluation", choices=["loss", "behaviour"])
    for option in ("--checkpoint", "--dataset", "--output", "--test-set"):
        paths.add_argument(option)
    paths.add_argument("--compare", nargs=2, default=[])
    given, _ = paths.parse_known_args(sys.argv[1:])
    config = platform_config(sys.argv[1:])
    checkpoints = [ref for ref in (given.checkpoint, *given.compare) if ref not in NOT_PATHS]
    named = {f"checkpoint {ref}": ref for ref in checkpoints}
    if given.evaluation == "loss":
        named |= {"--output": given.output, "dataset": given.dataset or config.train.dataset}
    else:
        named |= {"--test-set": given.test_set or config.evaluation.test_set_dir,
                  "output": given.output or config.evaluation.output_dir}
    require_absolute("jobs/evaluate.py", named)
    sys.exit(main(["evaluate", *sys.argv[1:]]))
