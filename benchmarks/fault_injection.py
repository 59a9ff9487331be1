"""Fault injection: a study whose step processes are SIGKILLed at random, re-run to
completion, against an undisturbed run of the same study (issue 22).

Runs ``defacing-assets demo --profile ci`` twice, each in a fresh temporary folder
with its own study folder, ``TMPDIR`` and Dagster instance, both with the same seed:

1. undisturbed, once;
2. disturbed: while the command runs, a killer thread SIGKILLs ``--kills`` step
   processes (the worker processes of the command's partition pool, never the
   command itself; at most one per command run, since a kill breaks the pool), one
   after each gap drawn from ``random.Random(--kill-seed)``;
   a gap is uniform in 0.5..1.5 x (undisturbed seconds / (kills + 1)), so the kills
   spread over about as long as an undisturbed study takes. A kill breaks the pool,
   the command ends with an error, and it is started again, until a run exits 0 and
   reports no failed partition (at most ``--max-attempts`` runs). A command run that
   neither prints nor uses CPU for ``--stall-s`` is hung: it is reported, with what
   each of its processes waits on, and SIGKILLed so the study can go on.

Then it compares the two stores file by file (the set of files first, then every
file: NIfTI by voxel data, dtype and affine, Parquet by content, JSON by content,
models by their tensors, anything else byte by byte), ignoring only fields that
hold wall-clock measurements or dates (:data:`VOLATILE`). It checks what the runs
left behind: tool work folders (``defacing-tool-*``) in their ``TMPDIR``, hidden
staging entries (``.<name>.tmp-*``, ``.<name>.old-*``) anywhere in their study
folder, and processes still running that carry the run's environment marker
(orphans: the marker is inherited by every process a run starts, whoever its
parent becomes). It prints a markdown summary.

By default the study folder also gets a ``defacers.yaml`` with one command-line
defacer (``quickshear_cli``: this platform's own ``defacing-assets deface --method
quickshear``), so that one method runs through the external-tool runner, whose
work folders hold an un-defaced copy of a scan (``--no-external`` leaves it out).
Of the ``ci`` profile's 4 subjects, 3 pass every compared defacer's QC: too few for
5-fold training, so the study stops after ``voxel_loss`` (no U-Nets, predictions,
Table 2 or report; ``--subjects N`` enlarges the cohort, but 7 subjects still gave
only 4 usable ones and an undisturbed run of almost 9 minutes on 2 shared cores).

Usage:
    .venv/bin/python benchmarks/fault_injection.py --kills 10 [--subjects N] [--seed 0]
        [--kill-seed 1] [--workers N] [--max-attempts 40] [--stall-s 180]
        [--no-external] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARKER = "FAULT_INJECTION_RUN"
"""Environment variable naming the run; every process a run starts inherits it."""
VOLATILE = {"seconds", "seconds_per_epoch", "generated"}
"""JSON keys and table columns that hold wall-clock measurements or dates."""
STAGING = re.compile(r"^\..+\.(tmp|old)-")
"""Hidden staging names of the store's atomic writes (current and earlier patterns)."""
WORKDIR = "defacing-tool-"
"""Prefix of the external-tool runner's work folders."""
FAILED_LINE = re.compile(r" FAILED\b")
PROGRESS = re.compile(r"^\w+ \d+/\d+ ")
"""A partition's progress line: ``defaced_scans 3/20 deepdefacer|SYN004 ok (30s, ETA 168s)``."""
GUARDIAN = " -I -S -c "
"""In the command line of the external-tool runner's guardian process."""
EXTERNAL_STANZA = """\
defacers:
  quickshear_cli:
    description: "quickshear through the external-tool runner (fault-injection benchmark)"
    command: "defacing-assets deface --method quickshear {input} {output} --kept-mask {mask}"
    mask: {path: "{mask}", convention: kept}
    version_command: "defacing-assets --version"
    timeout: 600
"""


# -- processes ------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return [child.pid for child in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def _workers(driver: int) -> list[int]:
    """The driver's partition-pool workers (not its resource tracker or anything else)."""
    return sorted(pid for pid in _children(driver) if "multiprocessing.spawn" in _cmdline(pid))


def _tagged_processes(tag: str) -> list[tuple[int, str]]:
    """Live processes whose environment carries ``MARKER=tag``."""
    needle = f"{MARKER}={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            state = Path(entry.path, "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append((int(entry.name), _cmdline(int(entry.name))))
    return found


# -- one run of the study ---------------------------------------------------------------


@dataclass
class Kill:
    at_s: float
    attempt: int
    pid: int
    stage: str
    busy: bool
    """Running a partition (it had Dagster's log tailers as children), else idle."""
    external_tool: bool


@dataclass
class Hang:
    attempt: int
    stalled_s: float
    processes: list[str]
    """``pid wchan command`` of every process of the hung command when it was ended."""


@dataclass
class Run:
    name: str
    root: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: list[tuple[int, float, bool]] = field(default_factory=list)
    """(exit status, seconds, whether it printed a FAILED partition) per command run."""
    kills: list[Kill] = field(default_factory=list)
    hangs: list[Hang] = field(default_factory=list)
    seconds: float = 0.0
    completed: bool = False

    @property
    def study(self) -> Path:
        return self.root / "study"

    @property
    def tmpdir(self) -> Path:
        return self.root / "tmp"

    def log(self, attempt: int) -> Path:
        return self.root / f"attempt-{attempt:02d}.log"


def _environment(run: Run) -> dict[str, str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DEFACING_", "DAGSTER_"))
    }
    environ.update(
        {
            "PATH": f"{BIN}{os.pathsep}{environ.get('PATH', os.defpath)}",
            "TMPDIR": str(run.tmpdir),
            MARKER: run.tag,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return environ


def _command(run: Run, args: argparse.Namespace) -> list[str]:
    command = [
        str(BIN / "defacing-assets"),
        "demo",
        "--study",
        str(run.study),
        "--profile",
        args.profile,
        "--seed",
        str(args.seed),
    ]
    if args.subjects:
        command += ["--subjects", str(args.subjects)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    return command


def _prepare(run: Run, args: argparse.Namespace) -> None:
    run.tmpdir.mkdir(parents=True)
    run.study.mkdir(parents=True)
    if args.external:
        (run.study / "defacers.yaml").write_text(EXTERNAL_STANZA)


def _last_stage(log: Path) -> str:
    """The command's last progress line (what had finished when a kill landed)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "?"
    for line in reversed(lines):
        if PROGRESS.match(line) or line.endswith((" ok", " FAILED")):
            return line.split(" (")[0].strip()
    return "no partition finished yet in this run"


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(_children(current))
    return found


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def _describe(pid: int) -> str:
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text().strip() or "-"
    except OSError:
        wchan = "?"
    return f"{pid} {wchan} {_cmdline(pid)[:160]}"


def _wait(process: subprocess.Popen, log: Path, stall_s: float, run: Run, attempt: int) -> int:
    """The command's exit status. A command that neither writes output nor uses CPU
    (below 2% of one core, itself and its descendants) for ``stall_s`` is hung: it is
    recorded and its process tree SIGKILLed, so the next command run can start."""
    hz = os.sysconf("SC_CLK_TCK")
    last_change, last_size, last_ticks = time.monotonic(), -1, 0
    while True:
        try:
            return process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        tree = _tree(process.pid)
        size, ticks = log.stat().st_size, _cpu_ticks(tree)
        now = time.monotonic()
        if size != last_size or ticks - last_ticks > 0.02 * hz * (now - last_change):
            last_change, last_size, last_ticks = now, size, ticks
            continue
        if now - last_change < stall_s:
            continue
        run.hangs.append(Hang(attempt, now - last_change, [_describe(pid) for pid in tree]))
        print(
            f"[{run.name}] attempt {attempt}: no output and no CPU for {now - last_change:.0f} s,"
            f" ending it: {run.hangs[-1].processes}",
            file=sys.stderr,
            flush=True,
        )
        for pid in reversed(tree):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return process.wait()


def _run_until_complete(run: Run, args: argparse.Namespace, killer: Killer | None) -> None:
    environ = _environment(run)
    command = _command(run, args)
    started = time.monotonic()
    for attempt in range(1, args.max_attempts + 1):
        began = time.monotonic()
        with open(run.log(attempt), "w") as log:
            process = subprocess.Popen(
                command, cwd=REPO, env=environ, stdout=log, stderr=subprocess.STDOUT
            )
            if killer is not None:
                killer.attach(process.pid, attempt, run.log(attempt))
            status = _wait(process, run.log(attempt), args.stall_s, run, attempt)
            if killer is not None:
                killer.detach()
        failed = bool(FAILED_LINE.search(run.log(attempt).read_text(errors="replace")))
        seconds = time.monotonic() - began
        run.attempts.append((status, seconds, failed))
        print(
            f"[{run.name}] attempt {attempt}: exit {status}, {seconds:.0f} s"
            f"{', FAILED partitions' if failed else ''}",
            file=sys.stderr,
            flush=True,
        )
        if status == 0 and not failed:
            run.completed = True
            break
        if killer is None and not run.hangs:
            break  # an undisturbed run that fails is a result in itself
    run.seconds = time.monotonic() - started


class Killer(threading.Thread):
    """SIGKILLs a random worker of the attached command after each drawn gap."""

    def __init__(self, run: Run, kills: int, gaps: list[float], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.run_record, self.kills, self.gaps, self.rng = run, kills, gaps, rng
        self.lock = threading.Lock()
        self.driver: int | None = None
        self.attempt = 0
        self.log: Path | None = None
        self.finished = threading.Event()
        self.started_at = time.monotonic()

    def attach(self, pid: int, attempt: int, log: Path) -> None:
        with self.lock:
            self.driver, self.attempt, self.log = pid, attempt, log

    def detach(self) -> None:
        with self.lock:
            self.driver = None

    def run(self) -> None:
        killed_in = 0
        for gap in self.gaps[: self.kills]:
            if self.finished.wait(gap):
                return
            while not self.finished.is_set():
                with self.lock:
                    driver, attempt, log = self.driver, self.attempt, self.log
                # One kill per command run: after it the pool is broken, and killing what is
                # left of it would end, and so hide, a command that does not end by itself.
                victims = _workers(driver) if driver and attempt != killed_in else []
                if victims:
                    victim = self.rng.choice(victims)
                    grandchildren = [_cmdline(pid) for pid in _children(victim)]
                    external = any(GUARDIAN in c for c in grandchildren)
                    busy = any(c.startswith("tail -F") for c in grandchildren)
                    stage = _last_stage(log) if log else "?"
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except ProcessLookupError:
                        continue  # it ended between the listing and the kill: pick again
                    killed_in = attempt
                    self.run_record.kills.append(
                        Kill(
                            time.monotonic() - self.started_at,
                            attempt,
                            victim,
                            stage,
                            busy,
                            external,
                        )
                    )
                    print(
                        f"[kill {len(self.run_record.kills)}] pid {victim} "
                        f"(attempt {attempt}, {stage}, {'busy' if busy else 'idle'}"
                        f"{', tool running' if external else ''})",
                        file=sys.stderr,
                        flush=True,
                    )
                    break
                time.sleep(0.2)


# -- what the runs left behind ------------------------------------------------------------


def _leftover_workdirs(run: Run) -> list[str]:
    return sorted(p.name for p in run.tmpdir.iterdir() if p.name.startswith(WORKDIR))


def _other_tmp_entries(run: Run) -> list[str]:
    return sorted(p.name for p in run.tmpdir.iterdir() if not p.name.startswith(WORKDIR))


def _leftover_staging(run: Run) -> list[str]:
    found = []
    for folder, folders, files in os.walk(run.study):
        for name in [*folders, *files]:
            if STAGING.match(name):
                found.append(str(Path(folder, name).relative_to(run.study)))
    return sorted(found)


def _orphans(run: Run, grace_s: float) -> list[tuple[int, str]]:
    """Processes of the run still alive ``grace_s`` after its last command ended (Dagster's
    log tailers stop within a second or two of their step)."""
    deadline = time.monotonic() + grace_s
    while True:
        found = _tagged_processes(run.tag)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


# -- comparison ------------------------------------------------------------------------------


RUN_FOLDER = "<run folder>"
"""What each run's own folder is replaced with in stored text (``scan.json`` records the
path a subject was read from)."""


def _strip(value: object, root: str) -> object:
    """``value`` without volatile fields, with the run's folder replaced by RUN_FOLDER."""
    if isinstance(value, dict):
        return {k: _strip(v, root) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, RUN_FOLDER)
    return value


def _normalised_table(path: Path, root: str):
    import pandas as pd

    table = pd.read_parquet(path)
    table = table.drop(columns=[c for c in table.columns if c in VOLATILE])
    for column in table.columns:
        if table[column].dtype == object:
            table[column] = table[column].map(lambda v: _strip(v, root))
    return table


def _difference(kind: str, left: Path, right: Path, roots: tuple[str, str]) -> str | None:
    """None when the two files hold the same result, else what differs."""
    if kind == "nifti":
        import nibabel as nib
        import numpy as np

        a, b = nib.load(left), nib.load(right)
        if a.shape != b.shape:
            return f"shape {a.shape} != {b.shape}"
        if a.get_data_dtype() != b.get_data_dtype():
            return f"dtype {a.get_data_dtype()} != {b.get_data_dtype()}"
        if not np.array_equal(a.affine, b.affine):
            return "affine differs"
        va, vb = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
        if not np.array_equal(va, vb, equal_nan=va.dtype.kind == "f"):
            return f"{int(np.count_nonzero(va != vb))} voxels differ"
        return None
    if kind == "parquet":
        import pandas as pd

        a, b = _normalised_table(left, roots[0]), _normalised_table(right, roots[1])
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError as error:
            return " ".join(str(error).split())[:300]
        return None
    if kind == "json":
        a = _strip(json.loads(left.read_text()), roots[0])
        b = _strip(json.loads(right.read_text()), roots[1])
        if a == b:
            return None
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            return f"keys differ: {', '.join(keys)}"
        return "content differs"
    if kind == "model":
        import torch

        a = torch.load(io.BytesIO(left.read_bytes()), weights_only=True)
        b = torch.load(io.BytesIO(right.read_bytes()), weights_only=True)
        if a.keys() != b.keys():
            return "different tensors"
        unequal = [k for k in a if not torch.equal(a[k], b[k])]
        return f"{len(unequal)} of {len(a)} tensors differ" if unequal else None
    return None if left.read_bytes() == right.read_bytes() else "bytes differ"


def _kind(path: Path) -> str:
    name = path.name
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".pt"):
        return "model"
    return "bytes"


def _stored_files(store: Path) -> dict[str, Path]:
    files = {}
    for folder, folders, names in os.walk(store):
        folders[:] = [f for f in folders if not STAGING.match(f)]
        for name in names:
            if not STAGING.match(name):
                path = Path(folder, name)
                files[str(path.relative_to(store))] = path
    return files


@dataclass
class Comparison:
    compared: dict[str, dict[str, int]] = field(default_factory=dict)
    """asset -> file kind -> files compared."""
    only_in: dict[str, list[str]] = field(default_factory=dict)
    differences: list[tuple[str, str]] = field(default_factory=list)


def compare_stores(left: Path, right: Path, roots: tuple[Path, Path]) -> Comparison:
    """Compare two stores; ``roots``: each run's folder, replaced by RUN_FOLDER in text."""
    a, b = _stored_files(left), _stored_files(right)
    result = Comparison(
        only_in={
            "undisturbed": sorted(a.keys() - b.keys()),
            "disturbed": sorted(b.keys() - a.keys()),
        }
    )
    for relative in sorted(a.keys() & b.keys()):
        asset = Path(relative).parts[0].removesuffix(".parquet")
        kind = _kind(a[relative])
        counts = result.compared.setdefault(asset, {})
        counts[kind] = counts.get(kind, 0) + 1
        problem = _difference(kind, a[relative], b[relative], (str(roots[0]), str(roots[1])))
        if problem:
            result.differences.append((relative, problem))
    return result


# -- report ------------------------------------------------------------------------------------


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{model}, {cores} cores{memory}; {system}"


def _summary(
    args: argparse.Namespace,
    undisturbed: Run,
    disturbed: Run,
    comparison: Comparison,
    checks: dict[str, dict[str, list]],
) -> str:
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    example = " ".join(shlex.quote(a) for a in _command(Run("x", Path("STUDY_ROOT")), args))
    lines = [
        f"Command: `.venv/bin/python benchmarks/fault_injection.py {argv}`"
        f" ({time.strftime('%Y-%m-%d')}).",
        "",
        f"- Machine: {_machine()}.",
        f"- Study command (each run in its own temporary folder): `{example}`"
        + (
            "; the study folder holds a `defacers.yaml` with `quickshear_cli`, quickshear "
            "run through the external-tool runner."
            if args.external
            else "."
        ),
        "",
        "| | undisturbed | disturbed |",
        "|---|---|---|",
        f"| wall seconds (all command runs) | {undisturbed.seconds:.0f} "
        f"| {disturbed.seconds:.0f} |",
        f"| command runs (exit statuses) | {len(undisturbed.attempts)} "
        f"({', '.join(str(s) for s, _, _ in undisturbed.attempts)}) | {len(disturbed.attempts)} "
        f"({', '.join(str(s) for s, _, _ in disturbed.attempts)}) |",
        f"| completed (exit 0, no FAILED partition) | {'yes' if undisturbed.completed else 'NO'} "
        f"| {'yes' if disturbed.completed else 'NO'} |",
        f"| SIGKILLs delivered | 0 | {len(disturbed.kills)} of {args.kills} |",
        f"| hung command runs (ended by this script) | {len(undisturbed.hangs)} "
        f"| {len(disturbed.hangs)} |",
    ]
    for name in ("tool work folders left", "staging entries left", "orphan processes"):
        values = [checks[run][name] for run in ("undisturbed", "disturbed")]
        lines.append(f"| {name} | {len(values[0])} | {len(values[1])} |")
    lines += [
        "",
        "Kills (seconds after the disturbed run started, command run, the command's last "
        "progress line, whether the killed worker was running a partition):",
        "",
    ]
    for number, kill in enumerate(disturbed.kills, start=1):
        state = "busy" if kill.busy else "idle"
        tool = ", external tool running" if kill.external_tool else ""
        lines.append(
            f"{number}. {kill.at_s:.0f} s, run {kill.attempt}: {kill.stage} ({state}{tool})"
        )
    for run in (undisturbed, disturbed):
        for hang in run.hangs:
            lines += [
                "",
                f"Hung: {run.name} command run {hang.attempt}, no output and no CPU for "
                f"{hang.stalled_s:.0f} s; its processes (pid, kernel wait, command) when it "
                "was ended:",
                "",
                *[f"- `{process}`" for process in hang.processes],
            ]
    lines += [
        "",
        "Compared (files per asset; NIfTI by voxel data, dtype and affine, Parquet "
        "and JSON by content, models by tensors, anything else by bytes; "
        f"ignored fields: {', '.join(sorted(VOLATILE))}; each run's own folder in stored "
        f"text reads {RUN_FOLDER}):",
        "",
    ]
    for asset, counts in sorted(comparison.compared.items()):
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        lines.append(f"- {asset}: {kinds}")
    total = sum(sum(c.values()) for c in comparison.compared.values())
    only = comparison.only_in
    identical = not comparison.differences and not only["undisturbed"] and not only["disturbed"]
    clean = all(not v for run in checks.values() for v in run.values())
    lines.append("")
    if identical:
        lines.append(f"Outputs: all {total} stored files identical.")
    else:
        lines.append(f"Outputs: {len(comparison.differences)} of {total} files differ:")
        for relative, problem in comparison.differences:
            lines.append(f"- `{relative}`: {problem}")
        for side, files in only.items():
            for relative in files:
                lines.append(f"- `{relative}`: only in the {side} run")
    for run, found in checks.items():
        for name, values in found.items():
            for value in values:
                lines.append(f"- {run}, {name}: `{value}`")
    verdict = (
        "PASS"
        if identical
        and clean
        and disturbed.completed
        and len(disturbed.kills) == args.kills
        and not disturbed.hangs
        and not undisturbed.hangs
        else "FAIL"
    )
    lines += ["", f"Verdict: {verdict}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--profile", default="ci")
    parser.add_argument(
        "--subjects", type=int, default=None, help="cohort size (default: the profile's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the study's seed (both runs)")
    parser.add_argument(
        "--kill-seed", type=int, default=1, help="seed of the kill times and victims"
    )
    parser.add_argument("--workers", type=int, default=None, help="the demo's --workers")
    parser.add_argument("--max-attempts", type=int, default=40, help="command runs at most")
    parser.add_argument(
        "--orphan-grace", type=float, default=15.0, help="seconds to wait for exits"
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=180.0,
        help="a command run with no output and no CPU this long is hung: recorded and ended",
    )
    parser.add_argument("--no-external", dest="external", action="store_false")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it")
    args = parser.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fault-injection-"))
    root.mkdir(parents=True, exist_ok=True)
    undisturbed, disturbed = (
        Run("undisturbed", root / "undisturbed"),
        Run("disturbed", root / "disturbed"),
    )
    print(f"working in {root}", file=sys.stderr, flush=True)
    try:
        for run in (undisturbed, disturbed):
            _prepare(run, args)
        _run_until_complete(undisturbed, args, None)
        checks = {"undisturbed": {}}
        checks["undisturbed"]["orphan processes"] = _orphans(undisturbed, args.orphan_grace)

        rng = random.Random(args.kill_seed)
        mean_gap = undisturbed.seconds / (args.kills + 1)
        gaps = [rng.uniform(0.5, 1.5) * mean_gap for _ in range(args.kills)]
        killer = Killer(disturbed, args.kills, gaps, rng)
        killer.start()
        _run_until_complete(disturbed, args, killer)
        killer.finished.set()
        killer.join()
        checks["disturbed"] = {"orphan processes": _orphans(disturbed, args.orphan_grace)}
        for run in (undisturbed, disturbed):
            checks[run.name]["tool work folders left"] = _leftover_workdirs(run)
            checks[run.name]["staging entries left"] = _leftover_staging(run)
        for run in (undisturbed, disturbed):
            other = _other_tmp_entries(run)
            if other:
                print(f"[{run.name}] other entries in TMPDIR: {other}", file=sys.stderr)
        comparison = compare_stores(
            undisturbed.study / "store",
            disturbed.study / "store",
            (undisturbed.root, disturbed.root),
        )
        print(_summary(args, undisturbed, disturbed, comparison, checks))
    finally:
        for run in (undisturbed, disturbed):  # never leave a process of ours behind
            for pid, _ in _tagged_processes(run.tag):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
