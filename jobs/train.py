"""Ray job entry point: fine-tune with Ray Train (resumes a run by train.run_name).

    ray job submit --working-dir . -- python jobs/train.py --config configs/train-demo.yaml

Same as `plexray train`; arguments are passed through (--config FILE, --set KEY=VALUE).
Writes <train.output_dir>/<train.run_name>/train_summary.json as its machine-readable summary.
"""

import sys

from plexray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
