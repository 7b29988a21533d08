"""The real command line with a slow disk: ``python -m tests.support.slow_fsync serve …``.

Every ``os.fsync`` and ``os.fdatasync`` first sleeps a random 20 to 50 ms (or the range in
``SLOW_FSYNC_MS``, e.g. ``5-10``), then does the real call; everything else is
:func:`fleet_monitor.cli.main` unchanged. Used by the slow-disk tests and ``benchmarks.soak``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

DEFAULT_RANGE_MS = "20-50"


def slowed(real: Callable[[Any], None], low_s: float, high_s: float) -> Callable[[Any], None]:
    """``real`` behind a random sleep of ``low_s`` to ``high_s`` seconds."""

    def slow(fd: Any) -> None:
        time.sleep(random.uniform(low_s, high_s))
        real(fd)

    return slow


def install(range_ms: str = DEFAULT_RANGE_MS) -> None:
    """Slow down ``os.fsync`` and ``os.fdatasync`` for the whole process."""
    low, high = (float(part) / 1000 for part in range_ms.split("-"))
    for name in ("fsync", "fdatasync"):
        setattr(os, name, slowed(getattr(os, name), low, high))


if __name__ == "__main__":
    install(os.environ.get("SLOW_FSYNC_MS", DEFAULT_RANGE_MS))
    from fleet_monitor.cli import main

    sys.exit(main())
