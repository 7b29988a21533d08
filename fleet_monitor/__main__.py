"""``python -m fleet_monitor``: the same as the ``fleet-monitor`` command."""

import sys

from fleet_monitor.cli import main

if __name__ == "__main__":
    sys.exit(main())
