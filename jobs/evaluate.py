"""Ray job entry point: evaluate a checkpoint on a dataset.

    ray job submit --working-dir . -- python jobs/evaluate.py --checkpoint $CHECKPOINT --config configs/train-demo.yaml \
        --set train.dataset=$PWD/artifacts/demo/data

Same as `plexray evaluate`; arguments are passed through (--config FILE, --set KEY=VALUE).
Arguments: --checkpoint DIR --dataset DIR [--split validation|train|all] [--output FILE]; prints JSON.
Every path (the dataset defaults to train.dataset) must be absolute: see job_paths.py.
"""

import argparse
import sys

from job_paths import platform_config, require_absolute
from plexray.cli import main

if __name__ == "__main__":
    paths = argparse.ArgumentParser(add_help=False)
    for option in ("--checkpoint", "--dataset", "--output"):
        paths.add_argument(option)
    given, _ = paths.parse_known_args(sys.argv[1:])
    require_absolute("jobs/evaluate.py", {"--checkpoint": given.checkpoint, "--output": given.output,
                                          "dataset": given.dataset or platform_config(sys.argv[1:]).train.dataset})
    sys.exit(main(["evaluate", *sys.argv[1:]]))
