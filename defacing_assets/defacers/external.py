"""Command-line defacers: a :class:`ToolSpec` says how to run the tool, one class runs any of them.

The study wrapped tools that only exist as programs (``fsl_deface``,
``mri_deface``, ``@afni_refacer_run``, ``mask_face``, ``defacer``). Each run
happens in a fresh temporary folder: the scan is written there as
``input.nii.gz``, the command runs with that folder as its working directory,
and the defaced image is looked up among the spec's output patterns, because
tools name their files themselves (AFNI derives a mask name from the prefix,
``mask_face`` appends ``_full_normfilter``).

That folder holds an un-defaced copy of the scan, and the tool may run for
minutes, so neither may outlive the run:

* the folder is removed on every exit path (``finally``; a SIGTERM or SIGHUP
  that would kill the process outright is turned into ``SystemExit`` while
  a tool runs, where no one else handles those signals), and its name
  records the owner (``defacing-tool-<pid>-<host>-...``), so folders left by
  a SIGKILLed run are swept by the next run (:func:`sweep_stale_workdirs`);
* the tool runs under a small guardian process (:data:`_GUARDIAN`) in its
  own process group. The guardian dies with its parent (Linux
  ``PR_SET_PDEATHSIG``, and a poll of its parent id elsewhere) and then
  kills the tool's whole group, so a killed ``deface`` or step process
  leaves no tool or tool child running. The guardian rather than a
  ``preexec_fn`` in our process, because ``preexec_fn`` is unsafe in a
  threaded parent (Dagster) and a death signal would reach only the tool,
  not the children a tool script starts.

Which voxels were kept:

* ``kept_mask`` is True where the tool left the voxel unchanged, for every
  tool (as :mod:`defacing_assets.defacers.base` requires). Without a tool mask
  it is exactly that: output equals input, within ``unchanged_tolerance``.
* When the tool writes a mask, its convention says which nonzero voxels it
  removed (``removed``: nonzero = face, ``kept``: nonzero = kept); a voxel the
  tool changed is never reported as kept, even where its mask says so. A mask
  that calls most nonzero voxels "removed" although the tool left them intact
  fails the run: the convention is then almost certainly inverted.
* The replacement for removed voxels is the tool's own output, so zeroing
  tools give ``input * kept`` and refacing/blurring tools keep their values.

A tool whose output is not on the input's grid (shape, or affine beyond
:data:`~defacing_assets.imaging.volume.AFFINE_TOLERANCE_MM`) is refused rather
than resampled: resampling would change voxels the tool never touched and
blur the kept mask.

Failures (non-zero exit, timeout, missing or unreadable output, other grid)
raise :class:`DefacingFailed` whose reason quotes the command and the last
lines the tool printed. The recorded command shows the temporary folder as
``{workdir}`` so it can be rerun by hand.

In a ``shell: true`` command every placeholder value is shell-quoted by the
runner, and a placeholder inside quotes in the template (``cp "{input}" x``)
is refused when the spec is checked: inside double quotes the runner's single
quotes are literal and ``$(...)`` in a value (from ``TMPDIR`` or a param)
would run; inside single quotes the value would end up unquoted.
"""

from __future__ import annotations

import difflib
import glob
import gzip
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from defacing_assets.defacers.base import Defacer, DefacingFailed, MethodOutput
from defacing_assets.imaging.errors import InvalidScanError
from defacing_assets.imaging.io import load_volume, volume_to_bytes
from defacing_assets.imaging.volume import AFFINE_TOLERANCE_MM, Volume

RUN_PLACEHOLDERS = ("input", "output", "mask", "workdir", "seed")
"""Placeholders every command may use; the values are paths inside the work folder."""

INPUT_FORMATS = ("nii.gz", "nii")
MASK_CONVENTIONS = ("kept", "removed")
TAIL_LINES = 20
VERSION_TIMEOUT_S = 30.0
INVERTED_MASK_FRACTION = 0.5
"""A tool mask fails the run when more than this share of the nonzero voxels it
calls removed came back unchanged."""

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

WORKDIR_PREFIX = "defacing-tool-"
"""Work folders are ``<tmp>/defacing-tool-<pid>-<host>-<defacer>-<random>``."""
_WORKDIR = re.compile(rf"^{WORKDIR_PREFIX}(?P<pid>\d+)-(?P<host>[0-9a-f]{{8}})-")
STALE_WORKDIR_S = 60.0
"""A work folder of a dead process on this host is swept once it is this old."""
FOREIGN_WORKDIR_S = 24 * 3600.0
"""A work folder made on another host (a shared temporary folder), whose process
cannot be checked from here, is swept once it is this old."""
GUARDIAN_GRACE_S = 5.0
"""How long the guardian gets to kill the tool's group before it is killed itself."""
_START_FAILED = "defacing-guardian: could not start: "


class SpecError(ValueError):
    """A ToolSpec that cannot work; ``problems`` lists (key, problem) pairs."""

    def __init__(self, name: str, problems: Sequence[tuple[str, str]]) -> None:
        self.name = name
        self.problems = list(problems)
        super().__init__(
            "\n".join(f"defacer {name!r}, key {key!r}: {problem}" for key, problem in problems)
        )


class UnsetVariable(LookupError):
    """A ``${VAR}`` reference to an environment variable that is not set."""


@dataclass(frozen=True)
class MaskSpec:
    """The mask a tool writes itself.

    Attributes:
        paths: candidate patterns, like :attr:`ToolSpec.outputs`.
        convention: ``removed`` (nonzero = removed/face) or ``kept`` (nonzero = kept).
    """

    paths: tuple[str, ...] = ("{mask}",)
    convention: Literal["kept", "removed"] = "removed"

    def __post_init__(self) -> None:
        paths = (self.paths,) if isinstance(self.paths, str) else tuple(self.paths)
        object.__setattr__(self, "paths", paths or ("{mask}",))


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """How to run one command-line defacer.

    Attributes:
        name: registry name.
        command: template string (split like a shell would, then each word filled in)
            or list of words, using ``{input}``, ``{output}``, ``{mask}``, ``{workdir}``,
            ``{seed}`` (the study's seed, for tools that draw at random) and the keys of
            ``params``; ``{{``/``}}`` are literal braces.
        executable: program whose presence on PATH decides availability; default the
            command's first word. May use ``params`` placeholders.
        outputs: where the defaced image appears: patterns relative to the work folder
            (placeholders and glob wildcards allowed), tried in order; the first that
            matches exactly one file wins.
        mask: the mask the tool writes, or None to derive it from output == input.
        unchanged_tolerance: largest |output - input| still counted as unchanged (for
            tools that round or cast every voxel).
        timeout: seconds before the tool (and everything it started) is killed; None: never.
        environment: extra environment variables; values may use ``${VAR}`` or
            ``${VAR:-default}`` from the current environment.
        params: extra placeholder values (``${VAR}`` allowed), e.g. a template folder.
        requires: files or folders that must exist (``params`` placeholders allowed).
        requires_programs: other programs the tool calls, which must be on PATH.
        version_command: prints the version (first non-empty line is kept); may use
            ``params`` placeholders. None: ``"unknown"``.
        description: one line for listings.
        shell: run the command string through ``/bin/sh`` (values are shell-quoted).
        input_format: ``nii.gz`` or ``nii``, the container the input is written as.
    """

    name: str
    command: str | tuple[str, ...]
    executable: str = ""
    outputs: tuple[str, ...] = ()
    mask: MaskSpec | None = None
    unchanged_tolerance: float = 0.0
    timeout: float | None = 3600.0
    environment: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    requires_programs: tuple[str, ...] = ()
    version_command: str | tuple[str, ...] | None = None
    description: str = ""
    shell: bool = False
    input_format: str = "nii.gz"

    def __post_init__(self) -> None:
        if not isinstance(self.command, str):
            object.__setattr__(self, "command", tuple(self.command))
        for key in ("outputs", "requires", "requires_programs"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(value))
        if isinstance(self.version_command, list):
            object.__setattr__(self, "version_command", tuple(self.version_command))
        object.__setattr__(self, "environment", dict(self.environment))
        object.__setattr__(self, "params", dict(self.params))
        problems = spec_problems(self)
        if problems:
            raise SpecError(self.name, problems)
        if not self.outputs:
            object.__setattr__(self, "outputs", ("{output}",))
        if not self.executable:
            object.__setattr__(self, "executable", self.command_words()[0])

    def command_words(self) -> tuple[str, ...]:
        """The command template as words (a string is split like a shell would)."""
        if isinstance(self.command, str):
            return tuple(shlex.split(self.command))
        return self.command


def placeholders(template: str) -> list[str]:
    """Field names used in a ``str.format`` template; raises ValueError on bad syntax."""
    found = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not _PARAM_NAME.match(name) or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"placeholder {{{shown}}} must be a plain name such as {{input}}")
        found.append(name)
    return found


def quoted_placeholders(command: str) -> list[str]:
    """Placeholders that stand inside single or double quotes of a shell command string.

    The runner shell-quotes every value; quotes around a placeholder undo that
    (see the module docstring), so :func:`spec_problems` refuses them. A
    placeholder inside ``$(...)`` within double quotes is refused too: safe,
    but rare, and simpler to rewrite than to tell apart.
    """
    found: list[str] = []
    quote = ""
    index = 0
    while index < len(command):
        char = command[index]
        if command.startswith(("{{", "}}"), index):
            index += 2
            continue
        if char == "{":
            end = command.find("}", index)
            if end < 0:
                break
            if quote:
                found.append(command[index + 1 : end])
            index = end + 1
            continue
        if char == "\\" and quote != "'":
            index += 2
            continue
        if not quote and char in "'\"":
            quote = char
        elif quote == char:
            quote = ""
        index += 1
    return found


def _shell_template(spec: ToolSpec) -> str:
    return spec.command if isinstance(spec.command, str) else " ".join(spec.command)


def _unknown_placeholder_problem(template: str, allowed: Iterable[str]) -> str | None:
    allowed = list(allowed)
    try:
        names = placeholders(template)
    except ValueError as error:
        return f"{template!r}: {error}"
    for name in names:
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean {{{close[0]}}}?)" if close else ""
            return (
                f"unknown placeholder {{{name}}} in {template!r}{hint}; "
                f"known: {', '.join('{' + a + '}' for a in allowed)}"
            )
    return None


def spec_problems(spec: ToolSpec) -> list[tuple[str, str]]:
    """Everything wrong with a spec as (key, problem) pairs; empty when it can run."""
    problems: list[tuple[str, str]] = []
    run_names = [*RUN_PLACEHOLDERS, *spec.params]
    param_names = list(spec.params)
    for name in spec.params:
        if not _PARAM_NAME.match(name):
            problems.append(("params", f"{name!r} is not a valid placeholder name"))
        elif name in RUN_PLACEHOLDERS:
            problems.append(("params", f"{name!r} is reserved (set by the run itself)"))
    try:
        words = spec.command_words()
    except ValueError as error:
        return [*problems, ("command", f"cannot be split into words: {error}")]
    if not words or not all(isinstance(w, str) and w for w in words):
        return [*problems, ("command", "must be a non-empty string or list of non-empty strings")]
    used: list[str] = []
    for word in words:
        problem = _unknown_placeholder_problem(word, run_names)
        if problem:
            problems.append(("command", problem))
        else:
            used.extend(placeholders(word))
    if spec.shell:
        for name in dict.fromkeys(quoted_placeholders(_shell_template(spec))):
            problems.append(
                (
                    "command",
                    f"placeholder {{{name}}} is inside quotes in a shell command; the runner "
                    "quotes every value itself, and inside quotes a value holding $(...) "
                    f"(from TMPDIR or a param) would run: write {{{name}}} without quotes",
                )
            )
    if "input" not in used:
        problems.append(("command", "never mentions {input}, so the tool cannot read the scan"))
    if "output" not in used and not spec.outputs:
        problems.append(
            ("outputs", "the command has no {output} and no outputs patterns say where it writes")
        )
    if "mask" in used and spec.mask is None:
        problems.append(
            ("mask", "the command writes {mask} but no mask stanza gives its convention")
        )
    for pattern in spec.outputs:
        problem = _pattern_problem(pattern, run_names)
        if problem:
            problems.append(("outputs", problem))
    if spec.mask is not None:
        if spec.mask.convention not in MASK_CONVENTIONS:
            problems.append(
                (
                    "mask",
                    f"convention {spec.mask.convention!r} is not one of "
                    f"{', '.join(MASK_CONVENTIONS)}",
                )
            )
        for pattern in spec.mask.paths:
            problem = _pattern_problem(pattern, run_names)
            if problem:
                problems.append(("mask", problem))
    if not spec.executable:
        problem = _unknown_placeholder_problem(words[0], param_names)
        if problem:
            problems.append(
                ("executable", f"cannot be taken from the command's first word: {problem}")
            )
    for key, templates in (
        ("executable", [spec.executable] if spec.executable else []),
        ("requires", list(spec.requires)),
        ("version_command", _version_words(spec)),
    ):
        for template in templates:
            problem = _unknown_placeholder_problem(template, param_names)
            if problem:
                problems.append((key, problem))
    if spec.timeout is not None and not spec.timeout > 0:
        problems.append(("timeout", f"must be a positive number of seconds, got {spec.timeout}"))
    if not spec.unchanged_tolerance >= 0:
        problems.append(
            ("unchanged_tolerance", f"must be zero or positive, got {spec.unchanged_tolerance}")
        )
    if spec.input_format not in INPUT_FORMATS:
        problems.append(
            (
                "input_format",
                f"{spec.input_format!r} is not one of {', '.join(INPUT_FORMATS)}",
            )
        )
    return problems


def _version_words(spec: ToolSpec) -> list[str]:
    if spec.version_command is None:
        return []
    if isinstance(spec.version_command, str):
        try:
            return shlex.split(spec.version_command)
        except ValueError:
            return [spec.version_command]
    return list(spec.version_command)


def _pattern_problem(pattern: str, allowed: Sequence[str]) -> str | None:
    problem = _unknown_placeholder_problem(pattern, allowed)
    if problem:
        return problem
    if os.path.isabs(pattern) or ".." in Path(pattern).parts:
        return f"{pattern!r} must be relative to the work folder (or start with a placeholder)"
    return None


def expand_environment(value: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}``; raises UnsetVariable naming a missing VAR."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if environ.get(name):  # unset and empty both fall back to the default
            return environ[name]
        if default is not None:
            return default
        raise UnsetVariable(name)

    return _ENV_REFERENCE.sub(replace, value)


def _tail(data: bytes | str | None, lines: int = TAIL_LINES) -> str:
    if not data:
        return ""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    kept = [line.rstrip() for line in text.strip().splitlines()][-lines:]
    return "\n".join(kept)


def _printed(stdout: bytes | None, stderr: bytes | None) -> str:
    """What the tool said, for a failure reason: stderr's tail, else stdout's."""
    err, out = _tail(stderr), _tail(stdout)
    if err:
        return f"\nstderr (last {TAIL_LINES} lines):\n{err}"
    if out:
        return f"\nstdout (last {TAIL_LINES} lines; stderr was empty):\n{out}"
    return "\n(the tool printed nothing)"


_GUARDIAN = r"""
import os, signal, subprocess, sys, time

parent = int(sys.argv[1])
child = None
stopped = []
try:
    import ctypes

    prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
except Exception:
    prctl = None


def kill_tool():
    if child is not None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass


def stop(signum, frame):
    stopped.append(signum)
    kill_tool()


def own_group():
    os.setpgid(0, 0)
    if prctl is not None:
        prctl(1, signal.SIGKILL, 0, 0, 0)


for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(number, stop)
if prctl is not None:
    prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != parent:
    sys.exit(128 + signal.SIGTERM)
try:
    child = subprocess.Popen(sys.argv[2:], preexec_fn=own_group)
except OSError as error:
    sys.stderr.write(START_FAILED + str(error) + "\n")
    sys.exit(127)
if stopped:
    kill_tool()
while True:
    try:
        code = child.wait(timeout=0.5)
        break
    except subprocess.TimeoutExpired:
        if os.getppid() != parent:
            kill_tool()
kill_tool()
if stopped:
    os._exit(128 + stopped[0])
if code < 0:  # die of the tool's signal, so the parent reports it as before
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):  # SIGKILL, SIGSTOP: default already
        pass
    os.kill(os.getpid(), -code)
    time.sleep(1)
    sys.exit(128 - code)
sys.exit(code)
""".replace("START_FAILED", repr(_START_FAILED))
"""Runs the tool (its arguments after the parent's pid) in the tool's own process group,
and kills that group when the parent dies, when told to stop (SIGTERM) and when the
tool exits (children it left behind). Exits with the tool's status; stdlib only, so
it starts in a few milliseconds."""


def _guarded(argv: list[str] | str) -> list[str]:
    """The guardian's command line for a tool's argv (a string runs through /bin/sh)."""
    words = ["/bin/sh", "-c", argv] if isinstance(argv, str) else list(argv)
    return [sys.executable, "-I", "-S", "-c", _GUARDIAN, str(os.getpid()), *words]


def _stop(process: subprocess.Popen) -> None:
    """Stop the guardian, which kills the tool and every process it started."""
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=GUARDIAN_GRACE_S)
    except subprocess.TimeoutExpired:  # the tool then dies by its own death signal
        with suppress(ProcessLookupError):
            process.kill()
        process.wait()


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def exit_on_termination() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``SystemExit`` (so ``finally`` clauses
    run) where they would otherwise kill the process outright.

    Only in the main thread, and only for signals nobody handles (Dagster and
    other hosts keep their own handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for number in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(number) == signal.SIG_DFL:
            previous[number] = signal.signal(number, _raise_exit)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold back SIGTERM, SIGHUP and SIGINT (main thread) while patient data is removed."""
    held = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def sweep_stale_workdirs(
    folder: str | Path | None = None,
    min_age_s: float = STALE_WORKDIR_S,
    foreign_age_s: float = FOREIGN_WORKDIR_S,
) -> list[Path]:
    """Remove work folders that runs killed by SIGKILL left behind; return them.

    Each holds an un-defaced copy of a scan. A folder is stale when its
    owner (the pid in its name) is not running on this host and it is at
    least ``min_age_s`` old; one made on another host (a shared temporary
    folder) only after ``foreign_age_s``. ``folder`` defaults to the
    temporary folder runs use.
    """
    from defacing_assets.imaging.io import process_alive

    root = Path(folder or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    host, now = _host_tag(), time.time()
    for entry in entries:
        match = _WORKDIR.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if match.group("host") == host:
            stale = age >= min_age_s and not process_alive(int(match.group("pid")))
        else:
            stale = age >= foreign_age_s
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


_SWEPT: set[str] = set()
"""Temporary folders this process has swept already (once per process and folder)."""


def _sweep_once() -> None:
    root = tempfile.gettempdir()
    if root not in _SWEPT:
        _SWEPT.add(root)
        sweep_stale_workdirs(root)


class CommandLineDefacer(Defacer):
    """Runs one :class:`ToolSpec` in a temporary folder and reads back what it wrote."""

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.tool = Path(spec.executable).name
        self._version: str | None = None

    def __repr__(self) -> str:
        return f"CommandLineDefacer({self.spec.name!r})"

    # -- environment and availability ------------------------------------------------

    @staticmethod
    def _expand(mapping: Mapping[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """Expand ``${VAR}`` in each value; also returns (variable, key) for each unset one."""
        values, missing = {}, []
        for key, value in mapping.items():
            try:
                values[key] = expand_environment(value, os.environ)
            except UnsetVariable as unset:
                missing.append((unset.args[0], key))
        return values, missing

    def _environment(self) -> dict[str, str]:
        """The tool's environment: ours plus the spec's (raises UnsetVariable)."""
        extra, missing = self._expand(self.spec.environment)
        if missing:
            variable, key = missing[0]
            raise UnsetVariable(f"{variable} (used by environment.{key})")
        return {**os.environ, **extra}

    def _params(self) -> dict[str, str]:
        params, missing = self._expand(self.spec.params)
        if missing:
            variable, key = missing[0]
            raise UnsetVariable(f"{variable} (used by params.{key})")
        return params

    def _which(self, program: str, environ: Mapping[str, str]) -> str | None:
        if os.sep in program:
            return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
        return shutil.which(program, path=environ.get("PATH", os.defpath))

    def available(self) -> tuple[bool, str]:
        """Whether the programs, variables and files the spec names are all here; else why not."""
        problems = []
        extra, missing_env = self._expand(self.spec.environment)
        params, missing_params = self._expand(self.spec.params)
        for variable, key in missing_env:
            problems.append(f"environment variable {variable} is not set (environment.{key})")
        for variable, key in missing_params:
            problems.append(f"environment variable {variable} is not set (params.{key})")
        environ = {**os.environ, **extra}

        def filled(template: str) -> str | None:
            try:
                return template.format_map(params)
            except KeyError:  # needs a param whose variable is unset, reported above
                return None

        executable = filled(self.spec.executable)
        if executable is not None and self._which(executable, environ) is None:
            if os.sep not in executable:
                problems.append(f"executable {executable!r} not found on PATH")
            elif os.path.isfile(executable):
                problems.append(f"executable {executable!r} is not executable (chmod +x)")
            else:
                problems.append(f"executable {executable!r} not found")
        for program in self.spec.requires_programs:
            if self._which(program, environ) is None:
                problems.append(f"program {program!r} (called by the tool) not found on PATH")
        for template in self.spec.requires:
            path = filled(template)
            if path is not None and not os.path.exists(path):
                problems.append(f"required file {path} not found")
        if problems:
            return False, f"{self.name}: " + "; ".join(problems)
        return True, ""

    def version(self) -> str:
        """First line the version command prints (cached), else ``unknown``."""
        if self._version is not None:
            return self._version
        words = _version_words(self.spec)
        if not words or not self.available()[0]:
            return "unknown"
        params = self._params()
        argv = [word.format_map(params) for word in words]
        try:
            completed = subprocess.run(
                argv,
                capture_output=True,
                timeout=VERSION_TIMEOUT_S,
                env=self._environment(),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            self._version = f"unknown ({shlex.join(argv)}: {error})"
            return self._version
        printed = (completed.stdout or b"") + b"\n" + (completed.stderr or b"")
        lines = [ln.strip() for ln in printed.decode("utf-8", "replace").splitlines()]
        first = next((line for line in lines if line), "")
        self._version = first[:200] if first else "unknown"
        return self._version

    # -- running ---------------------------------------------------------------------

    def _values(self, workdir: str) -> dict[str, str]:
        suffix = self.spec.input_format
        return {
            "input": os.path.join(workdir, f"input.{suffix}"),
            "output": os.path.join(workdir, "output.nii.gz"),
            "mask": os.path.join(workdir, "mask.nii.gz"),
            "workdir": workdir,
            "seed": str(self.seed),
            **self._params(),
        }

    def _argv(self, values: Mapping[str, str]) -> list[str] | str:
        """The command filled in: a word list, or for ``shell`` one string in which every
        placeholder value is shell-quoted (the spec has no quotes around placeholders)."""
        if self.spec.shell:
            quoted = {key: shlex.quote(value) for key, value in values.items()}
            return _shell_template(self.spec).format_map(quoted)
        return [word.format_map(values) for word in self.spec.command_words()]

    def _write_input(self, volume: Volume, path: str) -> None:
        data = volume_to_bytes(volume)
        if self.spec.input_format == "nii":
            data = gzip.decompress(data)
        Path(path).write_bytes(data)

    def _find(
        self, patterns: Sequence[str], values: Mapping[str, str], what: str, said: str
    ) -> Path:
        workdir = Path(values["workdir"])
        escaped = {key: glob.escape(value) for key, value in values.items()}
        for pattern in patterns:
            filled = pattern.format_map(escaped)
            full = (
                filled if os.path.isabs(filled) else os.path.join(glob.escape(str(workdir)), filled)
            )
            matches = sorted(glob.glob(full))
            if len(matches) == 1:
                return Path(matches[0])
            if len(matches) > 1:
                shown = ", ".join(self._shown(m, workdir) for m in matches)
                raise DefacingFailed(
                    f"{self.name}: {what} pattern {pattern!r} is ambiguous: {shown}"
                )
        present = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
        raise DefacingFailed(
            f"{self.name}: no {what} found; looked for {', '.join(map(repr, patterns))} in "
            f"{{workdir}}, which holds: {', '.join(present) or 'nothing'}{said}"
        )

    @staticmethod
    def _shown(path: str | Path, workdir: Path) -> str:
        return str(path).replace(str(workdir), "{workdir}")

    def _read(self, path: Path, volume: Volume, what: str, workdir: Path, said: str) -> Volume:
        try:
            found = load_volume(str(path))
        except InvalidScanError as error:
            raise DefacingFailed(
                f"{self.name}: unreadable {what} {self._shown(path, workdir)}: "
                f"{error.problem}{said}"
            ) from None
        if found.shape != volume.shape:
            raise DefacingFailed(
                f"{self.name}: {what} has shape {found.shape} but the input has {volume.shape}; "
                "tools that crop or resample are refused (no resampling is done)"
            )
        if not found.same_grid(volume):
            difference = float(np.max(np.abs(found.affine - volume.affine)))
            raise DefacingFailed(
                f"{self.name}: {what} is on another grid than the input (affines differ by up "
                f"to {difference:.4g} mm, tolerance {AFFINE_TOLERANCE_MM} mm; orientation "
                f"{found.orientation} vs {volume.orientation}); tools that reorient or "
                "resample are refused (no resampling is done)"
            )
        return found

    def _run(self, argv: list[str] | str, workdir: str, record: str) -> tuple[bytes, bytes]:
        try:
            environ = self._environment()
        except UnsetVariable as missing:
            raise DefacingFailed(
                f"{self.name}: environment variable {missing} is not set"
            ) from None
        try:
            process = subprocess.Popen(
                _guarded(argv),
                cwd=workdir,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            raise DefacingFailed(f"{self.name}: could not start {record}: {error}") from None
        try:
            stdout, stderr = process.communicate(timeout=self.spec.timeout)
        except subprocess.TimeoutExpired:
            _stop(process)
            try:  # a child that left the tool's group may still hold the pipes
                stdout, stderr = process.communicate(timeout=GUARDIAN_GRACE_S)
            except subprocess.TimeoutExpired:
                stdout, stderr = b"", b""
            raise DefacingFailed(
                f"{self.name}: timed out after {self.spec.timeout:g} s and was killed: "
                f"{record}{_printed(stdout, stderr)}"
            ) from None
        finally:
            _stop(process)
        if process.returncode == 127 and (stderr or b"").startswith(_START_FAILED.encode()):
            error = stderr.decode("utf-8", "replace")[len(_START_FAILED) :].strip()
            raise DefacingFailed(f"{self.name}: could not start {record}: {error}")
        if process.returncode != 0:
            raise DefacingFailed(
                f"{self.name}: exited with status {process.returncode}: "
                f"{record}{_printed(stdout, stderr)}"
            )
        return stdout, stderr

    def _unchanged(self, output: np.ndarray, original: np.ndarray) -> np.ndarray:
        a = np.asarray(output, dtype=np.float64)
        b = np.asarray(original, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            same = np.abs(a - b) <= self.spec.unchanged_tolerance
        return same | (np.isnan(a) & np.isnan(b))

    def _kept_from_mask(
        self, mask: np.ndarray, unchanged: np.ndarray, original: np.ndarray
    ) -> np.ndarray:
        nonzero = np.asarray(mask, dtype=np.float64) != 0
        assert self.spec.mask is not None
        removed = nonzero if self.spec.mask.convention == "removed" else ~nonzero
        observable = removed & (np.asarray(original) != 0)
        intact = observable & unchanged
        if observable.any() and intact.sum() > INVERTED_MASK_FRACTION * observable.sum():
            raise DefacingFailed(
                f"{self.name}: its mask calls {int(observable.sum())} nonzero voxels removed "
                f"but the tool left {int(intact.sum())} of them unchanged; is the mask "
                f"convention ({self.spec.mask.convention!r}) inverted?"
            )
        return ~removed & unchanged

    def compute(self, volume: Volume, modality: str) -> MethodOutput:
        """Run the tool in a fresh work folder, removed on every exit path (see the module
        docstring); folders of earlier runs killed outright are swept first."""
        _sweep_once()
        workdir = ""
        with exit_on_termination():
            try:
                workdir = tempfile.mkdtemp(
                    prefix=f"{WORKDIR_PREFIX}{os.getpid()}-{_host_tag()}-{self.name}-"
                )
                return self._compute_in(workdir, volume)
            finally:
                if workdir:
                    with _signals_deferred():
                        shutil.rmtree(workdir, ignore_errors=True)

    def _compute_in(self, workdir: str, volume: Volume) -> MethodOutput:
        try:
            values = self._values(workdir)
        except UnsetVariable as missing:
            raise DefacingFailed(
                f"{self.name}: environment variable {missing} is not set"
            ) from None
        argv = self._argv(values)
        joined = argv if isinstance(argv, str) else shlex.join(argv)
        record = joined.replace(workdir, "{workdir}")
        self._write_input(volume, values["input"])
        stdout, stderr = self._run(argv, workdir, record)
        said = _printed(stdout, stderr)
        work = Path(workdir)
        output_path = self._find(self.spec.outputs, values, "output", said)
        output = self._read(output_path, volume, "output", work, said)
        unchanged = self._unchanged(output.array, volume.array)
        if self.spec.mask is None:
            kept = unchanged
        else:
            mask_path = self._find(self.spec.mask.paths, values, "mask", said)
            mask = self._read(mask_path, volume, "mask", work, said)
            kept = self._kept_from_mask(mask.array, unchanged, volume.array)
        return MethodOutput(kept_mask=kept, replacement=output.array, command=record)
