"""``defacers.yaml``: command-line defacers described as data, checked before anything runs.

A wrong key in a YAML stanza should stop the study at load time with a message
naming the file, the line, the defacer and the key, not surface hours later as
a tool that "failed". Every problem in a file is reported at once.

Schema (every key but ``command`` is optional)::

    defacers:
      my_tool:                        # registry name: letters, digits, _ . -
        description: "one line for listings"
        command: "my_tool -i {input} -o {output} -m {mask}"   # or a list of words
        executable: my_tool           # default: the command's first word
        outputs: ["{output}", "out_*.nii.gz"]   # default ["{output}"]; tried in order
        mask:                         # only for tools that write a mask
          path: "{mask}"              # default "{mask}"; string or list of patterns
          convention: removed         # removed: nonzero = face; kept: nonzero = kept
        unchanged_tolerance: 0        # |output - input| <= this counts as unchanged
        timeout: 3600                 # seconds (> 0), or null for none; default 3600
        environment: {FSLOUTPUTTYPE: NIFTI_GZ, PATH: "/opt/tool/bin:${PATH}"}
        params: {template_dir: "${MY_TEMPLATES:-/opt/templates}"}
        requires: ["{template_dir}/face.gca"]   # files/folders that must exist
        requires_programs: [matlab]   # other programs the tool calls
        version_command: "my_tool --version"
        shell: false                  # true: run the command string through /bin/sh
                                      # (values are quoted by the runner: no quotes
                                      # around placeholders, they are refused)
        input_format: nii.gz          # or nii

Placeholders: ``{input}`` (the scan, ``input.nii.gz``), ``{output}``
(``output.nii.gz``), ``{mask}`` (``mask.nii.gz``) and ``{workdir}`` (the
temporary folder, also the working directory) in ``command``, ``outputs`` and
``mask.path``; the keys of ``params`` everywhere, including ``executable``,
``requires`` and ``version_command``. Output and mask patterns are relative to
the work folder and may use glob wildcards. In a ``shell: true`` command the
runner shell-quotes every placeholder's value; a placeholder written inside
quotes (``cp "{input}" ...``) is refused, because inside double quotes the
runner's quoting is undone and a value holding ``$(...)`` (from ``TMPDIR`` or
a param) would run. ``${VAR}`` and ``${VAR:-default}``
in ``environment`` and ``params`` read the current environment when the tool
is checked or run; an unset (or empty) variable without a default makes the
tool unavailable, with the variable named.

See :mod:`defacing_assets.defacers.external` for what happens at run time.
"""

from __future__ import annotations

import difflib
import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from defacing_assets.defacers.external import (
    INPUT_FORMATS,
    MASK_CONVENTIONS,
    MaskSpec,
    SpecError,
    ToolSpec,
)

BUILTIN_TOOLS = "tools.yaml"
TOP_LEVEL_KEYS = ("defacers",)
STANZA_KEYS = (
    "description",
    "command",
    "executable",
    "outputs",
    "mask",
    "unchanged_tolerance",
    "timeout",
    "environment",
    "params",
    "requires",
    "requires_programs",
    "version_command",
    "shell",
    "input_format",
)
MASK_KEYS = ("path", "convention")
_LIKELY_MEANT = {
    "cmd": "command",
    "args": "command",
    "output": "outputs",
    "env": "environment",
    "environ": "environment",
    "parameters": "params",
    "paths": "path",
    "version": "version_command",
    "requirements": "requires",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DefacerConfigError(ValueError):
    """A ``defacers.yaml`` that cannot be used; the message names file, line, defacer and key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(problems))


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                first = None
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first defined on line {first})",
                    key_node.start_mark,
                )
            try:
                seen[key] = line
            except TypeError:
                pass
        return super().construct_mapping(node, deep=deep)


def _suggestion(key: str, valid: tuple[str, ...]) -> str:
    meant = _LIKELY_MEANT.get(key)
    if meant not in valid:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        meant = close[0] if close else None
    return f" (did you mean {meant!r}?)" if meant else ""


def _lines(node: yaml.Node | None) -> dict[tuple[str, ...], int]:
    """Line numbers of the ``defacers`` stanzas and their keys, for error messages."""
    found: dict[tuple[str, ...], int] = {}
    if not isinstance(node, yaml.MappingNode):
        return found
    for key, value in node.value:
        found[(str(key.value),)] = key.start_mark.line + 1
        if key.value != "defacers" or not isinstance(value, yaml.MappingNode):
            continue
        for stanza_key, stanza in value.value:
            name = str(stanza_key.value)
            found[("defacers", name)] = stanza_key.start_mark.line + 1
            if isinstance(stanza, yaml.MappingNode):
                for field_key, _ in stanza.value:
                    found[("defacers", name, str(field_key.value))] = field_key.start_mark.line + 1
    return found


class _Stanza:
    """Type checks for one stanza, collecting problems with file/line/defacer/key."""

    def __init__(self, source: str, name: str, lines: dict[tuple[str, ...], int]) -> None:
        self.source = source
        self.name = name
        self.lines = lines
        self.problems: list[str] = []

    def problem(self, key: str, text: str) -> None:
        line = self.lines.get(("defacers", self.name, key.split(".")[0]))
        line = line or self.lines.get(("defacers", self.name))
        where = f"{self.source}, line {line}" if line else self.source
        self.problems.append(f"{where}: defacer {self.name!r}, key {key!r}: {text}")

    def string(self, key: str, value: Any) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.problem(key, f"must be a non-empty string, got {_shown(value)}")
        return None

    def words(self, key: str, value: Any, allow_empty: bool = False) -> tuple[str, ...] | None:
        """A string (one item) or a list of non-empty strings."""
        if isinstance(value, str) and value.strip():
            return (value,)
        if isinstance(value, list) and (value or allow_empty):
            bad = [item for item in value if not (isinstance(item, str) and item.strip())]
            if not bad:
                return tuple(value)
            self.problem(key, f"every item must be a non-empty string, got {_shown(bad[0])}")
            return None
        self.problem(key, f"must be a string or a list of strings, got {_shown(value)}")
        return None

    def number(self, key: str, value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, f"must be a number, got {_shown(value)}")
            return None
        return float(value)

    def mapping(self, key: str, value: Any, key_pattern: re.Pattern[str]) -> dict[str, str]:
        if not isinstance(value, dict):
            self.problem(key, f"must be a mapping of names to values, got {_shown(value)}")
            return {}
        result = {}
        for item, text in value.items():
            if not isinstance(item, str) or not key_pattern.match(item):
                self.problem(key, f"{item!r} is not a valid name")
            elif isinstance(text, bool) or not isinstance(text, str | int | float):
                self.problem(
                    f"{key}.{item}",
                    f"must be a string (quote it), got {_shown(text)}",
                )
            else:
                result[item] = str(text)
        return result


def _shown(value: Any) -> str:
    kind = "null" if value is None else type(value).__name__
    return f"{value!r} ({kind})"


def _parse_mask(stanza: _Stanza, value: Any) -> MaskSpec | None:
    if not isinstance(value, dict):
        stanza.problem(
            "mask",
            "must be a mapping with 'convention' (removed or kept) and optionally 'path', "
            f"got {_shown(value)}",
        )
        return None
    for key in value:
        if key not in MASK_KEYS:
            stanza.problem(
                f"mask.{key}",
                f"unknown key{_suggestion(str(key), MASK_KEYS)}; valid: {', '.join(MASK_KEYS)}",
            )
    paths = stanza.words("mask.path", value.get("path", "{mask}"))
    convention = value.get("convention")
    if convention not in MASK_CONVENTIONS:
        stanza.problem(
            "mask.convention",
            f"must be one of {', '.join(MASK_CONVENTIONS)} (removed: nonzero = removed face; "
            f"kept: nonzero = kept), got {_shown(convention)}",
        )
        return None
    return MaskSpec(paths=paths or ("{mask}",), convention=convention)


def _parse_stanza(stanza: _Stanza, body: Any) -> ToolSpec | None:
    if not isinstance(body, dict):
        stanza.problems.append(
            f"{stanza.source}: defacer {stanza.name!r}: must be a mapping of keys "
            f"({', '.join(STANZA_KEYS)}), got {_shown(body)}"
        )
        return None
    misspelt_command = False
    for key in body:
        if key not in STANZA_KEYS:
            hint = _suggestion(str(key), STANZA_KEYS)
            misspelt_command |= "'command'" in hint
            stanza.problem(str(key), f"unknown key{hint}; valid: {', '.join(STANZA_KEYS)}")
    if "command" not in body:
        if not misspelt_command:  # else the unknown key's message already says it
            stanza.problem("command", "missing: every defacer needs the command that runs it")
        return None
    raw = body["command"]
    command = (
        stanza.string("command", raw) if isinstance(raw, str) else stanza.words("command", raw)
    )
    fields: dict[str, Any] = {"name": stanza.name, "command": command}
    if "description" in body:
        fields["description"] = stanza.string("description", body["description"])
    if "executable" in body:
        fields["executable"] = stanza.string("executable", body["executable"])
    for key in ("outputs", "requires", "requires_programs"):
        if key in body:
            fields[key] = stanza.words(key, body[key], allow_empty=key != "outputs")
    if body.get("version_command") is not None:
        raw = body["version_command"]
        fields["version_command"] = (
            stanza.string("version_command", raw)
            if isinstance(raw, str)
            else stanza.words("version_command", raw)
        )
    if body.get("mask") is not None:
        fields["mask"] = _parse_mask(stanza, body["mask"])
    if "timeout" in body and body["timeout"] is not None:
        timeout = stanza.number("timeout", body["timeout"])
        if timeout is not None and timeout <= 0:
            stanza.problem("timeout", f"must be a positive number of seconds, got {timeout:g}")
        fields["timeout"] = timeout
    elif "timeout" in body:
        fields["timeout"] = None
    if "unchanged_tolerance" in body:
        tolerance = stanza.number("unchanged_tolerance", body["unchanged_tolerance"])
        if tolerance is not None and tolerance < 0:
            stanza.problem("unchanged_tolerance", f"must be zero or positive, got {tolerance:g}")
        fields["unchanged_tolerance"] = tolerance
    if "environment" in body:
        fields["environment"] = stanza.mapping("environment", body["environment"], _ENV_NAME)
    if "params" in body:
        fields["params"] = stanza.mapping("params", body["params"], _ENV_NAME)
    if "shell" in body:
        if not isinstance(body["shell"], bool):
            stanza.problem("shell", f"must be true or false, got {_shown(body['shell'])}")
        fields["shell"] = bool(body["shell"])
    if "input_format" in body:
        if body["input_format"] not in INPUT_FORMATS:
            stanza.problem(
                "input_format",
                f"must be one of {', '.join(INPUT_FORMATS)}, got {_shown(body['input_format'])}",
            )
        fields["input_format"] = body["input_format"]
    if stanza.problems:
        return None
    try:
        return ToolSpec(**fields)
    except SpecError as error:
        for key, problem in error.problems:
            stanza.problem(key, problem)
        return None


def parse_tool_specs(text: str, source: str = "<string>") -> dict[str, ToolSpec]:
    """Tool specs from YAML text; ``source`` names the file in errors."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        detail = f"{context}: {problem}" if context else problem
        raise DefacerConfigError(source, [f"{source}{where}: invalid YAML: {detail}"]) from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    lines = _lines(node)
    if not isinstance(data, dict):
        raise DefacerConfigError(
            source,
            [f"{source}: must be a mapping with a 'defacers' key, got {_shown(data)}"],
        )
    problems = []
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            line = lines.get((str(key),))
            problems.append(
                f"{source}, line {line}: unknown top-level key {key!r}"
                f"{_suggestion(str(key), TOP_LEVEL_KEYS)}; valid: {', '.join(TOP_LEVEL_KEYS)}"
            )
    stanzas = data.get("defacers") or {}
    if not isinstance(stanzas, dict):
        problems.append(
            f"{source}: 'defacers' must map defacer names to stanzas, got {_shown(stanzas)}"
        )
        stanzas = {}
    specs: dict[str, ToolSpec] = {}
    for name, body in stanzas.items():
        if not isinstance(name, str) or not _NAME.match(name):
            line = lines.get(("defacers", str(name)))
            problems.append(
                f"{source}, line {line}: defacer name {name!r} must start with a letter or "
                "digit and use only letters, digits, '_', '.' and '-'"
            )
            continue
        stanza = _Stanza(source, name, lines)
        spec = _parse_stanza(stanza, body)
        problems.extend(stanza.problems)
        if spec is not None:
            specs[name] = spec
    if problems:
        raise DefacerConfigError(source, problems)
    return specs


def load_tool_specs(path: str | Path) -> dict[str, ToolSpec]:
    """Tool specs from a ``defacers.yaml`` file; raises DefacerConfigError naming what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefacerConfigError(str(path), [f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DefacerConfigError(str(path), [f"{path}: cannot be read ({error})"]) from None
    return parse_tool_specs(text, str(path))


@functools.cache
def _builtin_specs() -> dict[str, ToolSpec]:
    resource = resources.files(__package__).joinpath(BUILTIN_TOOLS)
    source = f"{__package__.replace('.', '/')}/{BUILTIN_TOOLS}"
    return parse_tool_specs(resource.read_text(encoding="utf-8"), source)


def builtin_tool_specs() -> dict[str, ToolSpec]:
    """The study's wrapped tools, from the ``tools.yaml`` shipped in this package."""
    return dict(_builtin_specs())
