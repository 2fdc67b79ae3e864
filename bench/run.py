"""The ``python -m bench`` command: run the benchmarks, print the table, write JSON.

One `hopper up` (the candidate profile) serves the latency, big-file and burst benchmarks;
the watcher benchmark runs a separate ``hopper watch`` in a home of its own against the same
server. The latency and burst baselines (one flow run per file on Prefect's process worker:
naive Prefect) run on a second `hopper up` configured that way, in the same run. The Iceberg
lake's rows (``bench/iceberg.py``) run on a `hopper up` of their own and compare with the
Parquet lake's latency and burst of the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import bare, cases, chaos, iceberg, replicas, scaleout
from bench.data import contract_yaml, write_small_files
from bench.procs import REPO, HopperUp, Profile
from bench.stats import Result, format_table, is_flat, mib

log = logging.getLogger("bench")

BENCHMARKS = (
    "latency", "big", "rss", "idle", "burst", "scaleout", "replicas", "chaos", "rss-s3", "iceberg",
)  # fmt: skip
# The benchmarks that run a Hopper (or none) of their own:
OWN_HOPPER = {"scaleout", "replicas", "chaos", "rss-s3", "iceberg"}
DATASETS = ["bench_latency", "bench_big", "bench_rss", "bench_burst", "bench_burst_base"]
# The naive Prefect setup the goals are measured against: one flow run per file (no
# batching) on Prefect's stock process worker (a new Python process per run).
BASELINE = Profile(
    "baseline: one flow run per file on Prefect's process worker",
    extra_yaml="watch:\n  batch_max_files: 1\n",
    env=(("HOPPER_WORKER", "process"),),
)

GOAL_P50, GOAL_P95 = 0.6, 1.0  # issue 20: drop to Parquet visible, embedded defaults
GOAL_FILES_PER_S = 80.0
GOAL_BARE_RATIO = 0.6  # of one plain Python process converting the same files (bench/bare.py)
GOAL_RATIO = 0.8
GOAL_RSS_BYTES = 1 << 30
GOAL_IDLE_CPU = 1.0


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is (``--quick`` or full, then per-flag overrides)."""

    latency_files: int
    burst_files: int
    burst_baseline_files: int
    burst_timeout: float
    big_mb: int
    rss_mb: int
    idle_files: int
    idle_seconds: float
    idle_settle_timeout: float
    scaleout_files: int
    chaos_files: int = 3000
    chaos_stall_seconds: float = 60.0
    commit_sources_small: int = 1_000
    commit_sources_large: int = 100_000
    commit_batch: int = 100
    commit_repeats: int = 7
    replicas_files: int = 2000


FULL = Sizes(20, 10_000, 20, 300, 1000, 2000, 100_000, 60, 600, 2000)
QUICK = Sizes(
    5, 200, 8, 30, 50, 100, 2_000, 10, 120, 200, 300, 20.0,
    commit_sources_small=200, commit_sources_large=2_000, commit_batch=20, commit_repeats=3,
    replicas_files=200,
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run Hopper's performance benchmarks against a real `hopper up`.",
    )
    p.add_argument("--quick", action="store_true", help="smoke-sized run (about 3 minutes)")
    p.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks to run, from {','.join(BENCHMARKS)} (default: all)",
    )
    p.add_argument("--latency-files", type=int, help="files for the latency benchmark")
    p.add_argument("--burst-files", type=int, help="files in the burst")
    p.add_argument("--burst-baseline-files", type=int, help="files in the baseline burst")
    p.add_argument("--burst-timeout", type=float, help="seconds to wait for a burst to land")
    p.add_argument("--big-mb", type=int, help="size of the throughput CSV, MB")
    p.add_argument("--rss-mb", type=int, help="size of the peak-RSS CSV, MB")
    p.add_argument("--idle-files", type=int, help="files the idle watcher tracks")
    p.add_argument("--idle-seconds", type=float, help="seconds the idle watcher is measured")
    p.add_argument(
        "--scaleout-files", type=int, help="files in each scale-out burst (1, then 2 workers)"
    )
    p.add_argument(
        "--replicas-files",
        type=int,
        help="files in the burst on one Prefect server, then on two replicas + services",
    )
    p.add_argument("--chaos-files", type=int, help="files in each chaos burst (one per fault)")
    p.add_argument(
        "--chaos-stall-seconds", type=float, help="how long the chaos run stalls the server"
    )
    p.add_argument(
        "--commit-sources-small", type=int, help="sources in the small table (iceberg commit)"
    )
    p.add_argument(
        "--commit-sources-large", type=int, help="sources in the large table (iceberg commit)"
    )
    p.add_argument("--commit-batch", type=int, help="fresh sources per timed iceberg commit")
    p.add_argument("--commit-repeats", type=int, help="timed iceberg commits per table")
    p.add_argument(
        "--extra-yaml",
        type=Path,
        help="file whose text is appended to the candidate's hopper.yaml",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the candidate's `hopper up` (repeatable)",
    )
    p.add_argument(
        "--rss-cap-gb",
        type=float,
        default=8.0,
        help="kill a flow run whose RSS passes this (protects the machine; default 8)",
    )
    p.add_argument("--work-dir", type=Path, help="scratch folder (default: a new temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, homes)")
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    return args


def sizes_from(args: argparse.Namespace) -> Sizes:
    """Embedded defaults, with any size flag given on the command line applied."""
    base = QUICK if args.quick else FULL
    values = {
        name: getattr(args, name) if getattr(args, name, None) is not None else default
        for name, default in base.__dict__.items()
    }
    return Sizes(**values)


def candidate_profile(args: argparse.Namespace) -> Profile:
    """The Hopper under test: as shipped, plus ``--extra-yaml`` and ``--env``."""
    extra = args.extra_yaml.read_text(encoding="utf-8") if args.extra_yaml else ""
    env = tuple(tuple(item.split("=", 1)) for item in args.env)
    if any(len(pair) != 2 for pair in env):
        raise SystemExit("--env takes KEY=VALUE")
    if not extra and not env:
        return Profile("as shipped")
    return Profile("candidate", extra, env)  # type: ignore[arg-type]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import prefect
    import pyarrow

    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / (1 << 20), 1),
        "python": platform.python_version(),
        "prefect": prefect.__version__,
        "pyarrow": pyarrow.__version__,
        "kernel": platform.release(),
        "commit": commit,
    }


# --------------------------------------------------------------------------- results


def latency_result(run: dict[str, Any], baseline: dict[str, Any] | None) -> Result:
    """Table row for the latency benchmark."""
    base = (
        f"p50 {baseline['p50']:.2f} s, p95 {baseline['p95']:.2f} s"
        if baseline
        else "= measured (one flow run per file)"
    )
    return Result(
        f"latency, 1 small file ({run['files']} drops)",
        f"p50 {run['p50']:.2f} s, p95 {run['p95']:.2f} s",
        f"p50 ≤ {GOAL_P50} s, p95 ≤ {GOAL_P95} s",
        base,
        run["p50"] <= GOAL_P50 and run["p95"] <= GOAL_P95,
        {"run": run, "baseline": baseline},
    )


def burst_result(run: dict[str, Any], baseline: dict[str, Any] | None) -> Result:
    """Table row for the burst benchmark."""
    measured = f"{run['files_per_s']:.2f} files/s"
    if run["timed_out"]:
        measured += f" ({run['landed']}/{run['files']} in {run['seconds']:.0f} s, timed out)"
    elif not run["exactly_once"]:
        measured += " (NOT exactly once)"
    base = "—"
    if baseline:
        base = f"{baseline['files_per_s']:.2f} files/s ({baseline['files']} files)"
    return Result(
        f"burst of {run['files']:,} small files",
        measured,
        f"all once, ≥ {GOAL_FILES_PER_S:.0f} files/s",
        base,
        run["exactly_once"] and run["files_per_s"] >= GOAL_FILES_PER_S,
        {"run": run, "baseline": baseline},
    )


def bare_pass(work: Path, count: int) -> dict[str, Any]:
    """One pass of the bare loop over the burst's very files (same names, same seed).

    The burst row runs one pass just before the burst and one just after it; the faster is
    the baseline (:func:`bench.bare.fastest`): the machine's speed drifts over minutes, and
    a slow moment of the loop must not flatter Hopper's ratio.
    """
    files = write_small_files(work / "staging-bare", count, cases.BURST_PREFIX, cases.BURST_SEED)
    out = work / "bare-out"
    shutil.rmtree(out, ignore_errors=True)
    return bare.bare_burst(files, contract_yaml("bench_burst"), out, passes=1)


def bare_result(run: dict[str, Any], bare_run: dict[str, Any]) -> Result:
    """Table row: the burst's files/s against one plain Python process on the same files."""
    ratio = run["files_per_s"] / bare_run["files_per_s"] if bare_run["files_per_s"] else 0.0
    return Result(
        f"burst of {run['files']:,} small files, against bare pyarrow",
        f"{run['files_per_s']:.1f} files/s ({ratio:.2f}× bare)",
        f"≥ {GOAL_BARE_RATIO}× bare, same files",
        f"{bare_run['files_per_s']:.1f} files/s (read_csv + checks + write_table, 1 process)",
        run["exactly_once"] and ratio >= GOAL_BARE_RATIO,
        {"bare": bare_run, "ratio": round(ratio, 3)},
    )


def big_result(run: dict[str, Any]) -> Result:
    """Table row for the big-file throughput benchmark."""
    return Result(
        f"{run['bytes'] / 1e6:,.0f} MB CSV end to end",
        f"{run['hopper_mb_s']:.1f} MB/s ({run['ratio']:.2f}× bare)",
        f"≥ {GOAL_RATIO}× bare pyarrow",
        f"{run['bare_mb_s']:.1f} MB/s (bare pyarrow)",
        run["ratio"] >= GOAL_RATIO,
        {"run": run},
    )


def rss_result(run: dict[str, Any]) -> Result:
    """Table row for the peak-RSS benchmark."""
    measured = f"{mib(run['peak_rss_bytes']):,.0f} MiB ({run['hopper_mb_s']:.1f} MB/s)"
    if run.get("capped"):
        measured = f"> {mib(run['peak_rss_bytes']):,.0f} MiB (killed at the cap)"
    return Result(
        f"{run['bytes'] / 1e6:,.0f} MB CSV, flow-run peak RSS",
        measured,
        "≤ 1 GiB",
        "—",
        0 < run["peak_rss_bytes"] <= GOAL_RSS_BYTES,
        {"run": run},
    )


def rss_s3_result(run: dict[str, Any]) -> Result:
    """Table row for the peak-RSS benchmark into an S3 lake (moto)."""
    row = rss_result(run)
    row.benchmark = f"{run['bytes'] / 1e6:,.0f} MB CSV to an S3 lake (moto), reader peak RSS"
    return row


def idle_result(run: dict[str, Any]) -> Result:
    """Table row for the watcher-idle benchmark."""
    flat = is_flat(run["rss_growth_mib"], run["rss_start_mib"])
    return Result(
        f"watcher idle, {run['files']:,} files ({run['seconds']:.0f} s)",
        f"CPU {run['cpu_percent']:.2f} %, RSS {run['rss_end_mib']:.0f} MiB "
        f"({run['rss_growth_mib']:+.1f})",
        "CPU < 1 %, RSS flat",
        "—",
        run["cpu_percent"] < GOAL_IDLE_CPU and flat and run["alive_at_end"],
        {"run": run},
    )


def scaleout_result(run: dict[str, Any]) -> Result:
    """Table row for the scale-out benchmark (1 then 2 workers, PostgreSQL)."""
    one, two = run["one_worker"], run["two_workers"]
    measured = (
        f"2 workers: {two['files_per_s']:.1f} files/s ({run['ratio']:.2f}× 1 worker); "
        f"ceiling: {scaleout.ceiling(two)}"
    )
    return Result(
        f"burst of {run['files']:,} on PostgreSQL, 1 → 2 workers",
        measured,
        "all once with each; where the ceiling is",
        f"1 worker: {one['files_per_s']:.1f} files/s; {scaleout.ceiling(one)}",
        one["exactly_once"] and two["exactly_once"],
        {"run": run},
    )


def replicas_result(run: dict[str, Any]) -> Result:
    """Table row: the same burst on one Prefect server process and on two replicas + services."""
    single, apart = run["single"], run["apart"]
    return Result(
        f"burst of {run['files']:,}, Prefect on 1 process vs 2 replicas + services",
        f"2 replicas + services: {apart['files_per_s']:.1f} files/s ({run['ratio']:.2f}×); "
        f"Prefect {replicas.server_cores(apart):.2f} cores; {replicas.describe(apart)}",
        "all once with each; where the ceiling is",
        f"1 process: {single['files_per_s']:.1f} files/s; Prefect "
        f"{replicas.server_cores(single):.2f} cores; {replicas.describe(single)}",
        single["exactly_once"] and apart["exactly_once"],
        {"run": run},
    )


def chaos_result(run: dict[str, Any]) -> Result:
    """Table row for one fault of the chaos benchmark."""
    measured = f"settled {run['settle_seconds']:.1f} s after it ended"
    if run["timed_out"]:
        measured = f"{run['landed']}/{run['files']} landed, timed out"
    elif run["injected_after"] is None:
        measured = "the burst ended before the fault"
    elif not run["exactly_once"]:
        measured += " (NOT exactly once)"
    return Result(
        f"chaos: {run['fault']} during {run['files']:,} files",
        measured,
        f"≤ lease + 60 s ({run['budget_seconds']:.0f} s), all once",
        "—",
        run["within_budget"] and run["exactly_once"],
        {"run": run},
    )


def chaos_step(
    results: list[Result], work: Path, sizes: Sizes, candidate: Profile
) -> dict[str, Any]:
    """The chaos benchmark: each fault during a burst of its own, on one `hopper up`."""
    from hopper.settings import HopperSettings

    default_lease = HopperSettings.model_fields["lease_seconds"].default
    lease = float(dict(candidate.env).get("HOPPER_LEASE_SECONDS", default_lease))
    datasets = [f"bench_chaos_{kind.replace('-', '_')}" for kind in chaos.FAULTS]
    with HopperUp(work / "home-chaos", datasets, candidate) as up:
        for kind, dataset in zip(chaos.FAULTS, datasets, strict=True):

            def step(kind: str = kind, dataset: str = dataset) -> Result:
                fault = chaos.Fault(kind, at=1 / 3, stall_seconds=sizes.chaos_stall_seconds)
                run = chaos.chaos_burst(
                    up,
                    dataset,
                    sizes.chaos_files,
                    work / f"staging-{kind}",
                    fault,
                    lease,
                    timeout=sizes.chaos_stall_seconds + lease + 600,
                )
                return chaos_result(run)

            attempt(results, f"chaos {kind}", step)
        return {"lease_seconds": lease, "hopper_up_start_seconds": round(up.started_in, 1)}


def iceberg_step(
    results: list[Result],
    work: Path,
    sizes: Sizes,
    candidate: Profile,
    parquet: iceberg.ParquetLake,
) -> dict[str, Any]:
    """The Iceberg lake's rows, against the Parquet lake's latency and burst in this run.

    Whatever the Parquet lake's figures this run lacks (``--only iceberg``) are measured first
    on a `hopper up` of their own. The table's files and the scan are measured once the
    Iceberg `hopper up` has stopped, as is the commit (in this process, no Prefect).
    """
    datasets = ["bench_latency", "bench_burst"]
    facts: dict[str, Any] = {}
    if parquet.latency is None or parquet.burst is None:
        parquet.measured_by = "a Parquet-lake `hopper up` of the iceberg rows"
        facts["parquet_loadavg_1m"] = [os.getloadavg()[0]]
        try:
            with HopperUp(work / "home-iceberg-parquet", datasets, candidate) as up:
                if parquet.latency is None:
                    parquet.latency = cases.latency(up, datasets[0], sizes.latency_files)
                if parquet.burst is None:
                    staging = work / "staging-iceberg-parquet"
                    parquet.burst = cases.burst(
                        up, datasets[1], sizes.burst_files, staging, sizes.burst_timeout
                    )
                    parquet.burst_folder = up.lake(datasets[1])
        except Exception:
            log.exception("the Parquet lake's latency and burst (for the iceberg rows) failed")
        facts["parquet_loadavg_1m"].append(os.getloadavg()[0])
    burst: dict[str, Any] = {}
    home = work / "home-iceberg"
    try:
        with HopperUp(home, datasets, iceberg.iceberg_profile(candidate)) as up:
            attempt(
                results,
                "iceberg latency",
                lambda: iceberg.latency_result(
                    iceberg.latency(up, datasets[0], sizes.latency_files), parquet.latency
                ),
            )

            def burst_step() -> Result:
                staging = work / "staging-iceberg"
                burst.update(
                    iceberg.burst(up, datasets[1], sizes.burst_files, staging, sizes.burst_timeout)
                )
                return iceberg.burst_result(burst, parquet.burst)

            attempt(results, "iceberg burst", burst_step)
    except Exception as exc:
        log.exception("the iceberg lake's hopper up failed")
        results.append(error_result("iceberg: hopper up", exc))
    if burst.get("landed"):
        attempt(
            results,
            "iceberg data files",
            lambda: iceberg.files_result(iceberg.table_files(home, datasets[1]), sizes.burst_files),
        )
        folder = parquet.burst_folder
        if folder is not None:
            attempt(
                results,
                "iceberg scan",
                lambda: iceberg.scan_result(iceberg.scan_speed(home, datasets[1], folder)),
            )
    attempt(
        results,
        "iceberg commit",
        lambda: iceberg.commit_result(
            iceberg.commit_scaling(
                work / "iceberg-commit",
                sizes.commit_sources_small,
                sizes.commit_sources_large,
                sizes.commit_batch,
                sizes.commit_repeats,
            )
        ),
    )
    return {"parquet_figures_from": parquet.measured_by, **facts}


def error_result(name: str, exc: BaseException) -> Result:
    """Table row for a benchmark that could not produce its figure."""
    return Result(name, f"error: {str(exc).splitlines()[0][:80]}", "—", "—", None, {})


# --------------------------------------------------------------------------- orchestration


def attempt(results: list[Result], name: str, step: Callable[[], Result]) -> None:
    """Run one benchmark, appending its row; an error becomes a row, not a crash."""
    log.info("── %s", name)
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        result = step()
    except Exception as exc:
        log.exception("%s failed", name)
        result = error_result(name, exc)
    result.details["wall_seconds"] = round(time.monotonic() - began, 1)
    # Other work on the machine skews every figure: keep the load next to the result.
    result.details["loadavg_1m"] = [load_before, os.getloadavg()[0]]
    results.append(result)
    log.info("%s: %s (%s)", name, result.measured, result.verdict)


def run_all(
    args: argparse.Namespace, sizes: Sizes, work: Path, candidate: Profile
) -> tuple[list[Result], dict[str, Any]]:
    """Run the selected benchmarks; return the table rows and run-level facts."""
    only = set(args.only.split(","))
    results: list[Result] = []
    facts: dict[str, Any] = {}
    separate_baseline = not candidate.same_setup(BASELINE)
    baseline_latency: dict[str, Any] | None = None
    baseline_burst: dict[str, Any] | None = None
    parquet = iceberg.ParquetLake()  # this run's Parquet-lake figures, for the iceberg rows

    if separate_baseline and only & {"latency", "burst"}:
        with HopperUp(work / "home-baseline", DATASETS, BASELINE) as base_up:
            if "latency" in only:
                baseline_latency = cases.latency(base_up, "bench_latency", sizes.latency_files)
            if "burst" in only:
                baseline_burst = cases.burst(
                    base_up,
                    "bench_burst_base",
                    sizes.burst_baseline_files,
                    work / "staging-baseline",
                    timeout=max(sizes.burst_timeout, 600),
                    prefix="base",
                )

    if only - OWN_HOPPER:
        with HopperUp(work / "home", DATASETS, candidate) as up:
            facts["hopper_up_start_seconds"] = round(up.started_in, 1)
            if "latency" in only:

                def latency_step() -> Result:
                    parquet.latency = cases.latency(up, "bench_latency", sizes.latency_files)
                    return latency_result(parquet.latency, baseline_latency)

                attempt(results, "latency", latency_step)
            if "big" in only:
                attempt(
                    results,
                    "big file",
                    lambda: big_result(
                        cases.big_file(up, "bench_big", sizes.big_mb * 1_000_000, work / "big")
                    ),
                )
            if "rss" in only:
                attempt(
                    results,
                    "peak RSS",
                    lambda: rss_result(
                        cases.big_file(
                            up,
                            "bench_rss",
                            sizes.rss_mb * 1_000_000,
                            work / "big",
                            bare=False,
                            rss_cap=int(args.rss_cap_gb * (1 << 30)),
                        )
                    ),
                )
            if "idle" in only:
                attempt(
                    results,
                    "watcher idle",
                    lambda: idle_result(
                        cases.watcher_idle(
                            work / "home-idle",
                            up.api_url,
                            sizes.idle_files,
                            sizes.idle_seconds,
                            settle_timeout=sizes.idle_settle_timeout,
                        )
                    ),
                )
            if "burst" in only:
                bare_before: list[dict[str, Any]] = []

                def burst_step() -> Result:
                    nonlocal baseline_burst
                    if baseline_burst is None:
                        log.info("burst baseline: %d files", sizes.burst_baseline_files)
                        baseline_burst = cases.burst(
                            up,
                            "bench_burst_base",
                            sizes.burst_baseline_files,
                            work / "staging-baseline",
                            timeout=max(sizes.burst_timeout, 300),
                            prefix="base",
                        )
                        log.info("burst baseline: %.2f files/s", baseline_burst["files_per_s"])
                    bare_before.append(bare_pass(work, sizes.burst_files))
                    run = cases.burst(
                        up,
                        "bench_burst",
                        sizes.burst_files,
                        work / "staging",
                        sizes.burst_timeout,
                        probe=scaleout.CpuProbe(scaleout.roles(up, [])),
                    )
                    log.info("burst: where the CPU went: %s", scaleout.ceiling(run))
                    parquet.burst, parquet.burst_folder = run, up.lake("bench_burst")
                    return burst_result(run, baseline_burst)

                attempt(results, "burst", burst_step)

                def bare_step() -> Result:
                    if parquet.burst is None:
                        raise RuntimeError("no burst to compare with")
                    after = bare_pass(work, parquet.burst["files"])
                    return bare_result(parquet.burst, bare.fastest([*bare_before, after]))

                attempt(results, "burst vs bare", bare_step)
    if "iceberg" in only:
        facts["iceberg"] = iceberg_step(results, work, sizes, candidate, parquet)
    if "scaleout" in only:
        attempt(
            results,
            "scale-out",
            lambda: scaleout_result(
                scaleout.scaleout(work, sizes.scaleout_files, timeout=sizes.burst_timeout)
            ),
        )
    if "replicas" in only:
        attempt(
            results,
            "replicas",
            lambda: replicas_result(
                replicas.replicas_bench(work, sizes.replicas_files, timeout=sizes.burst_timeout)
            ),
        )
    if "chaos" in only:
        facts["chaos"] = chaos_step(results, work, sizes, candidate)
    if "rss-s3" in only:
        attempt(
            results,
            "peak RSS, S3 lake",
            lambda: rss_s3_result(
                cases.big_file_s3(
                    work / "s3",
                    sizes.rss_mb * 1_000_000,
                    rss_cap=int(args.rss_cap_gb * (1 << 30)),
                )
            ),
        )
    return results, facts


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``; returns 0 if every benchmark ran and passed."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sizes = sizes_from(args)
    candidate = candidate_profile(args)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="hopper-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log.info("work dir %s; sizes %s", work, sizes)
    began = time.monotonic()
    try:
        results, facts = run_all(args, sizes, work, candidate)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            log.info("kept %s", work)
    facts["total_seconds"] = round(time.monotonic() - began, 1)
    table = format_table(results)
    sys.stdout.write("\n" + table)
    if args.json:
        doc = {
            "machine": machine(),
            "mode": "quick" if args.quick else "full",
            "sizes": sizes.__dict__,
            "profile": {"candidate": candidate.name, "baseline": BASELINE.name},
            "facts": facts,
            "results": [r.to_dict() for r in results],
            "table": table,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
        log.info("wrote %s", args.json)
    log.info("done in %.0fs", facts["total_seconds"])
    return 0 if results and all(r.passed for r in results) else 1
