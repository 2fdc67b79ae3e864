"""``python -m bench``: run Hopper's performance benchmarks (see bench/README.md)."""

from __future__ import annotations

from bench.run import main

raise SystemExit(main())
