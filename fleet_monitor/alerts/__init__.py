"""Alerts: telling someone when a device, a group or the fleet goes down and comes back."""
