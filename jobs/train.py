"""Ray job entry point: fine-tune with Ray Train (resumes a run by train.run_name).

    ray job submit --working-dir . -- python jobs/train.py --config configs/train-demo.yaml \
        --set train.dataset=$PWD/artifacts/demo/data --set train.output_dir=$PWD/artifacts/demo/train

Same as `plexray train`; arguments are passed through (--config FILE, --set KEY=VALUE).
Writes <train.output_dir>/<train.run_name>/train_summary.json as its machine-readable summary.
train.dataset and train.output_dir must be absolute (or URIs): see job_paths.py.
"""

import sys

from job_paths import platform_config, require_absolute
from plexray.cli import main

if __name__ == "__main__":
    config = platform_config(sys.argv[1:])
    require_absolute("jobs/train.py", {"train.dataset": config.train.dataset, "train.output_dir": config.train.output_dir})
    sys.exit(main(["train", *sys.argv[1:]]))
