"""``shell: true`` stanzas: values never run as commands (issue 22, item 5).

The runner shell-quotes every placeholder value. Quotes written around a
placeholder in the stanza undo that (``"'...'"`` leaves ``$(...)`` live inside
double quotes), so such a stanza is refused when the configuration is read,
with the file, line, defacer and key, like every other stanza error.
"""

from __future__ import annotations

import tempfile
import textwrap
import warnings

import pytest

from defacing_assets.defacers.external import (
    CommandLineDefacer,
    SpecError,
    ToolSpec,
    quoted_placeholders,
)
from defacing_assets.defacers.yaml_config import DefacerConfigError, load_tool_specs
from defacing_assets_tests.defacers.test_external import (  # noqa: F401 (fixtures)
    ZERO_BOX,
    bin_dir,
    scan,
    tools,
    write_program,
)


@pytest.mark.parametrize(
    ("command", "quoted"),
    [
        ('zero_box "{input}" {output}', ["input"]),
        ("zero_box '{input}' '{output}'", ["input", "output"]),
        ('zero_box {input} {output} --note "see {workdir}/log"', ["workdir"]),
        ("zero_box $'{input}' {output}", ["input"]),
        ('zero_box {input} {output} && echo "done" \\"{seed}\\"', []),
        ("awk '{{print $1}}' {input} > {output}", []),
    ],
)
def test_placeholders_inside_quotes_are_found(command, quoted):
    assert quoted_placeholders(command) == quoted


def test_quoted_placeholder_in_a_shell_spec_is_refused():
    with pytest.raises(SpecError, match=r"key 'command'.*\{input\} is inside quotes"):
        ToolSpec("q", 'zero_box "{input}" {output}', shell=True)
    ToolSpec("words", 'zero_box "{input}" {output}')  # no shell: split into words, no quoting


@pytest.mark.parametrize("quoted", ['"{input}"', "'{input}'"])
def test_quoted_placeholder_stanza_names_file_line_and_key(tmp_path, quoted):
    config = tmp_path / "defacers.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            defacers:
              quoted:
                shell: true
                command: zero_box {quoted} {{output}}
        """)
    )
    with pytest.raises(DefacerConfigError) as raised:
        load_tool_specs(config)
    message = str(raised.value)
    assert message.startswith(f"{config}, line 4: defacer 'quoted', key 'command': ")
    assert "{input} is inside quotes" in message and "without quotes" in message


def test_values_from_params_and_tmpdir_never_run(bin_dir, tmp_path, monkeypatch):  # noqa: F811
    """Command substitutions in a param and in the temporary folder's path stay text."""
    write_program(bin_dir, "zero_box", ZERO_BOX)
    marker = tmp_path / "ran"
    scratch = tmp_path / "t$(cd ..;touch ran)`touch ran`"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    spec = ToolSpec(
        "noted",
        "zero_box {input} {output} && echo {note} > {workdir}/said && cat {workdir}/said",
        shell=True,
        params={"note": f"$(touch {marker}); touch {marker}"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CommandLineDefacer(spec).deface(scan())
    assert result.status == "ok", result.reason
    assert not marker.exists() and not (scratch / "ran").exists()
    assert list(scratch.iterdir()) == []
