"""The HTTP server: app.py (the API and the page), batcher.py (concurrent requests generated together), wav.py (the
streamed WAV format), static/ (the page). Run with `python -m serve checkpoint=DIR` (docs/serve.md)."""
