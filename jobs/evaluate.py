"""Ray job entry point: evaluate a checkpoint on a dataset.

    ray job submit --working-dir . -- python jobs/evaluate.py --checkpoint CHECKPOINT --config configs/train-demo.yaml

Same as `plexray evaluate`; arguments are passed through (--config FILE, --set KEY=VALUE).
Arguments: --checkpoint DIR --dataset DIR [--split validation|train|all] [--output FILE]; prints JSON.
"""

import sys

from plexray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
