"""Orchestration overhead of a study run, from the Dagster event log.

Compares the wall time of the runs with the summed compute time of their
steps (STEP_START to STEP_SUCCESS or failure), per asset and in total. The
ratio is what Dagster (run setup, IO managers, event writes, one run per
partition) adds on top of the work itself; the target is at most 1.25.
Given the command's own wall time (``--wall``), the ratio of that to the
step time also counts Python start-up and the gaps between runs. When runs
went side by side (``make demo`` runs one per core: ``--workers``), the
command-level ratio is wall x workers over the summed step time: the share of
the workers' time that was not spent inside a step.

Usage: DAGSTER_HOME=demo_study/dagster_home python benchmarks/orchestration_overhead.py
       [--since ISO-TIME] [--wall SECONDS] [--workers N]
"""

from __future__ import annotations

import argparse
import datetime
from collections import defaultdict

import pandas as pd
from dagster import DagsterInstance, RunsFilter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--since", default=None, help="only runs created after this UTC time")
    parser.add_argument("--wall", type=float, default=None, help="the command's wall seconds")
    parser.add_argument("--workers", type=int, default=1, help="runs that went side by side")
    args = parser.parse_args()
    instance = DagsterInstance.get()
    since = (
        datetime.datetime.fromisoformat(args.since).replace(tzinfo=datetime.UTC)
        if args.since
        else None
    )
    records = instance.get_run_records(RunsFilter(created_after=since) if since else None)
    run_seconds: dict[str, float] = defaultdict(float)
    step_seconds: dict[str, float] = defaultdict(float)
    runs: dict[str, int] = defaultdict(int)
    first_start, last_end = float("inf"), 0.0
    for record in records:
        if record.start_time is None or record.end_time is None:
            continue
        steps = instance.get_run_step_stats(record.dagster_run.run_id)
        asset = ", ".join(sorted(s.step_key for s in steps)) or "(no steps)"
        runs[asset] += 1
        run_seconds[asset] += record.end_time - record.start_time
        step_seconds[asset] += sum(
            s.end_time - s.start_time for s in steps if s.start_time and s.end_time
        )
        first_start = min(first_start, record.start_time)
        last_end = max(last_end, record.end_time)
    table = pd.DataFrame(
        {
            "runs": pd.Series(runs),
            "run wall s": pd.Series(run_seconds),
            "step compute s": pd.Series(step_seconds),
        }
    )
    table["ratio"] = table["run wall s"] / table["step compute s"]
    print(table.round(2).sort_values("run wall s", ascending=False).to_markdown())
    total_run, total_step = table["run wall s"].sum(), table["step compute s"].sum()
    print(
        f"\nruns: {int(table['runs'].sum())}, run wall {total_run:.0f} s, "
        f"step compute {total_step:.0f} s, ratio {total_run / total_step:.3f}"
    )
    span = last_end - first_start
    print(
        f"first run start to last run end: {span:.0f} s x {args.workers} worker(s), "
        f"ratio to step compute {span * args.workers / total_step:.3f}"
    )
    if args.wall:
        print(
            f"command wall {args.wall:.0f} s x {args.workers} worker(s), ratio to step compute "
            f"{args.wall * args.workers / total_step:.3f}"
        )


if __name__ == "__main__":
    main()
