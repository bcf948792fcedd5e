"""Ray job entry point: generate (or resume) a training set.

    ray job submit --working-dir . -- python jobs/generate_data.py --config configs/data-coffee-shop.yaml

Same as `plexray data generate`; arguments are passed through (--config FILE, --set KEY=VALUE).
Writes <data.output_dir>/manifest.json as its machine-readable summary.
"""

import sys

from plexray.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "generate", *sys.argv[1:]]))
