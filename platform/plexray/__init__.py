"""plexray: PersonaPlex fine-tuning and serving on Ray."""

import logging
import warnings

# Third-party notices that are not the user's business, silenced at their source for every plexray process.
# Ray's ray.init() tip about a future default: plexray keeps today's (tasks without GPUs do not see them).
warnings.filterwarnings("ignore", message="Tip: In future versions of Ray, Ray will no longer override",
                        category=FutureWarning)
# bitsandbytes (imported by moshi and peft) logs at import, on CPUs with AVX512-BF16, that an optional
# 4-bit kernel package is missing; plexray runs no 4-bit kernels.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
