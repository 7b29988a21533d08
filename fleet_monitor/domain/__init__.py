"""The domain: timestamps, durations, bitmaps, uptime, uploads, events, device histories and
read models. No Flask, no I/O, no storage format."""
