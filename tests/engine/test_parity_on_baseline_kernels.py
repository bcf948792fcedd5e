"""The parity tests once more on torch's baseline CPU kernels (ATEN_CPU_CAPABILITY=default).

The golden files were made with AVX-512 kernels; users run on whatever CPU they have. The main run
of the suite uses this machine's best kernels, this one the portable ones, which round differently:
together they show that the comparisons with NVIDIA's inference measure plexray, not the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PARITY_TESTS = ["test_reference_parity.py", "test_real_repo_replica.py"]
# Against NVIDIA's golden files only, on one thread (the main run covers 1 and 2): the Moshi family is
# compared with moshi run live on the same kernels, and the negative checks do not depend on the kernels.
SELECTION = "not moshi_family and not real_difference and not 2-threads"


def test_parity_holds_on_the_baseline_cpu_kernels():
    env = os.environ | {"ATEN_CPU_CAPABILITY": "default"}
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    capability = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert capability.stdout.strip() == "DEFAULT"  # the setting took: these are other kernels
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", SELECTION,
                             *PARITY_TESTS], cwd=Path(__file__).parent, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1] and " failed" not in result.stdout.splitlines()[-1]
