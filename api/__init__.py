"""The HTTP API (FastAPI). Validates, records and enqueues; never runs ffmpeg."""
