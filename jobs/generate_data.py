"""Ray job entry point: generate (or resume) a training set.

    ray job submit --working-dir . -- python jobs/generate_data.py --config configs/data-coffee-shop.yaml \
        --set data.output_dir=$PWD/artifacts/coffee-shop

Same as `plexray data generate`; arguments are passed through (--config FILE, --set KEY=VALUE).
Writes <data.output_dir>/manifest.json as its machine-readable summary. data.output_dir must be
absolute (or a URI): see job_paths.py.
"""

import sys

from job_paths import platform_config, require_absolute
from plexray.cli import main

if __name__ == "__main__":
    config = platform_config(sys.argv[1:])
    require_absolute("jobs/generate_data.py", {"data.output_dir": config.data.output_dir})
    sys.exit(main(["data", "generate", *sys.argv[1:]]))
