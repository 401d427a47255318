"""`python -m mediamill` runs the command-line interface."""

from mediamill.cli import main

raise SystemExit(main())
