"""Ray job entry point: fold a LoRA adapter into the base model.

    ray job submit --working-dir . -- python jobs/merge.py $CHECKPOINT $PWD/artifacts/demo/merged \
        --config configs/train-demo.yaml

Same as `plexray merge`; arguments are passed through (--config FILE, --set KEY=VALUE).
Arguments: CHECKPOINT OUTPUT [--config FILE] [--set KEY=VALUE], both paths absolute (see job_paths.py);
CHECKPOINT is a training run's best_checkpoint (or latest_checkpoint) in its train_summary.json.
Prints a JSON summary.
"""

import argparse
import sys

from job_paths import require_absolute
from plexray.cli import main
from plexray.settings import add_config_arguments

if __name__ == "__main__":
    paths = argparse.ArgumentParser(add_help=False)
    add_config_arguments(paths)  # so that --config's value is not taken for a path
    paths.add_argument("checkpoint", nargs="?")
    paths.add_argument("output", nargs="?")
    given, _ = paths.parse_known_args(sys.argv[1:])
    require_absolute("jobs/merge.py", {"CHECKPOINT": given.checkpoint, "OUTPUT": given.output})
    sys.exit(main(["merge", *sys.argv[1:]]))
