"""MediaMill: an event-driven media processing pipeline.

The repository root is the `mediamill` package; each top-level folder is one
room of ../shared/DESIGN.md (config, schemas, pipeline, storage, workers, api).
"""

__version__ = "0.1.0"
