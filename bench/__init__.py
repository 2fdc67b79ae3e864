"""Hopper's performance benchmarks: one command, real processes, self-generated data.

Run ``.venv/bin/python -m bench --help`` (see ``bench/README.md``). The pure parts (data
generation, statistics, the results table) live in :mod:`bench.data` and :mod:`bench.stats`
and are unit-tested; :mod:`bench.procs` starts and samples processes; :mod:`bench.cases`
holds one function per benchmark; :mod:`bench.run` is the command line.
"""

from __future__ import annotations

__all__: list[str] = []
