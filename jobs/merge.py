"""Ray job entry point: fold a LoRA adapter into the base model.

    ray job submit --working-dir . -- python jobs/merge.py CHECKPOINT OUTPUT --config configs/train-demo.yaml

Same as `plexray merge`; arguments are passed through (--config FILE, --set KEY=VALUE).
Arguments: CHECKPOINT OUTPUT [--config FILE] [--set KEY=VALUE]. Prints a JSON summary.
"""

import sys

from plexray.cli import main

if __name__ == "__main__":
    sys.exit(main(["merge", *sys.argv[1:]]))
