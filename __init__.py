"""MediaMill: an event-driven media processing pipeline.

The repository root is the `mediamill` package; each top-level folder is one
room of ../shared/DESIGN.md (config, schemas, pipeline, storage, workers, api).
"""

import os

__version__ = "0.1.0"

# MediaMill runs stages side by side in worker threads and processes, so the BLAS
# behind numpy (the true-peak interpolator's matrix products) gets one thread:
# OpenBLAS's own threads spin while they wait, and on a machine the workers keep
# busy they cost twice the CPU of the analysis they were meant to speed up. Read
# when numpy loads, so it is set here, before any room imports numpy; a value
# already in the environment wins. Only OpenBLAS's own variable (numpy's wheels ship
# OpenBLAS): OMP_NUM_THREADS would reach every child process (`nproc` reads it too).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
