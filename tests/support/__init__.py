"""Helpers shared by the tests (not tests themselves): HTTP helpers for the test client, fake
servers, heartbeat traffic for real processes, a slow-fsync wrapper around ``serve``."""
