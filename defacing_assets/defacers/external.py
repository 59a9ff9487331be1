"""Command-line defacers: a :class:`ToolSpec` says how to run the tool, one class runs any of them.

The study wrapped tools that only exist as programs (``fsl_deface``,
``mri_deface``, ``@afni_refacer_run``, ``mask_face``, ``defacer``). Each run
happens in a fresh temporary folder (a context manager removes it, whatever
happens): the scan is written there as ``input.nii.gz``, the command runs with
that folder as its working directory, and the defaced image is looked up
among the spec's output patterns, because tools name their files themselves
(AFNI derives a mask name from the prefix, ``mask_face`` appends
``_full_normfilter``).

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
"""

from __future__ import annotations

import difflib
import glob
import gzip
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
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


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the tool and every process it started (shell scripts spawn children)."""
    if process.poll() is not None:
        return
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:  # pragma: no cover - not POSIX
            process.kill()
    except ProcessLookupError:
        pass


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
        if self.spec.shell:
            quoted = {key: shlex.quote(value) for key, value in values.items()}
            template = (
                self.spec.command
                if isinstance(self.spec.command, str)
                else " ".join(self.spec.command)
            )
            return template.format_map(quoted)
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
                argv,
                cwd=workdir,
                env=environ,
                shell=self.spec.shell,
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
            _kill_group(process)
            stdout, stderr = process.communicate()
            raise DefacingFailed(
                f"{self.name}: timed out after {self.spec.timeout:g} s and was killed: "
                f"{record}{_printed(stdout, stderr)}"
            ) from None
        finally:
            _kill_group(process)
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
        with tempfile.TemporaryDirectory(prefix=f"deface-{self.name}-") as workdir:
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
