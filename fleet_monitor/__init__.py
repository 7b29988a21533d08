"""fleet-monitor: uptime and upload-time monitoring for a fleet of devices."""

__version__ = "0.1.0"
