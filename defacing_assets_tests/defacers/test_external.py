"""Command-line defacers, run against stand-in programs that honour each tool's command line.

The real tools (FSL, FreeSurfer, AFNI, MATLAB) are not installed here, so each
stand-in is a small Python script written into a temporary ``bin`` folder and
put first on PATH. The shebang is this interpreter, which has nibabel.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from defacing_assets.defacers.external import CommandLineDefacer, MaskSpec, SpecError, ToolSpec
from defacing_assets.defacers.yaml_config import (
    DefacerConfigError,
    builtin_tool_specs,
    load_tool_specs,
    parse_tool_specs,
)
from defacing_assets.imaging.volume import Volume

SHAPE = (20, 24, 16)
AFFINE = np.array(
    [[2.0, 0, 0, -20.0], [0, 2.0, 0, -24.0], [0, 0, 3.0, -24.0], [0, 0, 0, 1]], dtype=float
)
BOX = (slice(0, 6), slice(14, 24), slice(4, 12))
"""The stand-ins' "face"."""

PRELUDE = """\
import os
import sys

import nibabel as nib
import numpy as np

BOX = (slice(0, 6), slice(14, 24), slice(4, 12))


def load(path):
    image = nib.load(path)
    return np.asanyarray(image.dataobj), image.affine


def save(array, affine, path):
    nib.save(nib.Nifti1Image(array, affine), path)


def arg(flag):
    return sys.argv[sys.argv.index(flag) + 1]
"""

STAND_INS = {
    # fsl_deface <input> <output> -d <defacing_mask>: zeroes the face, mask 1 = face.
    "fsl_deface": """
if os.environ.get("FSLOUTPUTTYPE") != "NIFTI_GZ":
    sys.exit("FSLOUTPUTTYPE not set by the spec")
data, affine = load(sys.argv[1])
face = np.zeros(data.shape, np.uint8)
face[BOX] = 1
save(np.where(face == 1, 0, data).astype(data.dtype), affine, sys.argv[2])
save(face, affine, arg("-d"))
""",
    # mri_deface <in> <brain.gca> <face.gca> <out>: zeroes the face, writes no mask.
    "mri_deface": """
source, brain, face, target = sys.argv[1:5]
for template in (brain, face):
    if not os.path.exists(template):
        sys.exit(f"cannot open {template}")
data, affine = load(source)
data = data.copy()
data[BOX] = 0
save(data, affine, target)
""",
    # @afni_refacer_run -input X -mode_deface -prefix P: P as given plus <P>.face.nii.gz,
    # the shell being positive on the face, negative in the outer volume, zero elsewhere.
    "@afni_refacer_run": """
if "-ver" in sys.argv:
    print("2.4")
    sys.exit(0)
if "-mode_deface" not in sys.argv:
    sys.exit("** ERROR: need to specify a refacing mode")
prefix = arg("-prefix")
data, affine = load(arg("-input"))
shell = np.zeros(data.shape, np.int16)
shell[BOX] = 250
shell[-1] = -1
save(np.where(shell != 0, 0, data).astype(np.float32), affine, prefix)
root = os.path.basename(prefix).removesuffix(".gz").removesuffix(".nii")
save(shell, affine, os.path.join(os.path.dirname(prefix), root + ".face.nii.gz"))
""",
    # mask_face <scan> -nii -e 1: writes <root>_full_normfilter.nii.gz in the current folder,
    # the face replaced by filtered values (here a constant), not zeroed.
    "mask_face": """
if sys.argv[2:] != ["-nii", "-e", "1"]:
    sys.exit(f"unexpected options {sys.argv[2:]}")
data, affine = load(sys.argv[1])
data = data.copy()
data[BOX] = 7.5
root = os.path.basename(sys.argv[1]).removesuffix(".gz").removesuffix(".nii")
save(data, affine, f"{root}_full_normfilter.nii.gz")
""",
    # defacer -i X -o Y: rounds every voxel to int32 (as upstream does), fills the face.
    "defacer": """
data, affine = load(arg("-i"))
out = np.round(data).astype(np.int32)
out[BOX] = -5
save(out, affine, arg("-o"))
""",
    "matlab": "",
    "flirt": "",
    "fslmaths": "",
}


def write_program(folder: Path, name: str, body: str, prelude: str = PRELUDE) -> Path:
    """An executable Python script run by this interpreter (which has nibabel)."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{prelude}\n{textwrap.dedent(body)}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def scan() -> Volume:
    rng = np.random.default_rng(3)
    return Volume(rng.uniform(50.3, 150.3, SHAPE).astype(np.float32), AFFINE)


def face() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[BOX] = True
    return mask


def install(folder: Path) -> dict[str, str]:
    """Stand-ins, FSLDIR and mri_deface templates under ``folder``; returns the environment."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for name, body in STAND_INS.items():
        write_program(bin_dir, name, body)
    fsldir = folder / "fsl"
    (fsldir / "data" / "standard").mkdir(parents=True)
    (fsldir / "data" / "standard" / "MNI152_T1_1mm_BigFoV_facemask.nii.gz").write_bytes(b"")
    (fsldir / "data" / "standard" / "MNI152_T1_1mm.nii.gz").write_bytes(b"")
    (fsldir / "etc").mkdir()
    (fsldir / "etc" / "fslversion").write_text("6.0.7.9\n")
    templates = folder / "mri_deface"
    templates.mkdir()
    for name in ("talairach_mixed_with_skull.gca", "face.gca"):
        (templates / name).write_bytes(b"")
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FSLDIR": str(fsldir),
        "MRI_DEFACE_TEMPLATES": str(templates),
    }


@pytest.fixture
def tools(tmp_path, monkeypatch) -> dict[str, str]:
    environment = install(tmp_path)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return environment


@pytest.fixture
def bin_dir(tools) -> Path:
    return Path(tools["PATH"].split(os.pathsep)[0])


@pytest.fixture(scope="module")
def builtin_runs(tmp_path_factory):
    """Each shipped tool run once on the same scan, against its stand-in."""
    environment = install(tmp_path_factory.mktemp("tools"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        volume = scan()
        runs = {}
        for name, spec in builtin_tool_specs().items():
            defacer = CommandLineDefacer(spec)
            runs[name] = (defacer.deface(volume), defacer.version())
    return volume, environment, runs


# -- the shipped tools ----------------------------------------------------------------------


def test_builtin_specs_are_the_study_tools():
    assert set(builtin_tool_specs()) == {
        "fsl_deface",
        "mri_deface",
        "afni_refacer",
        "mask_face",
        "defacer",
    }


def test_builtin_tools_are_unavailable_without_their_programs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FSLDIR", raising=False)
    monkeypatch.delenv("MRI_DEFACE_TEMPLATES", raising=False)
    for spec in builtin_tool_specs().values():
        defacer = CommandLineDefacer(spec)
        ready, why = defacer.available()
        assert not ready
        assert f"{spec.executable!r} not found on PATH" in why, why
        result = defacer.deface(scan())
        assert (result.status, result.reason, result.image) == ("unavailable", why, None)
    _, why = CommandLineDefacer(builtin_tool_specs()["mri_deface"]).available()
    assert "MRI_DEFACE_TEMPLATES is not set" in why


def test_fsl_deface_records_its_command_and_reads_its_mask(builtin_runs):
    volume, _, runs = builtin_runs
    result, version = runs["fsl_deface"]
    assert result.status == "ok", result.reason
    assert result.command == (
        "fsl_deface {workdir}/input.nii.gz {workdir}/output.nii.gz -d {workdir}/mask.nii.gz"
    )
    np.testing.assert_array_equal(result.kept_mask.array, ~face())
    np.testing.assert_array_equal(result.image.array, volume.array * result.kept_mask.array)
    assert version == "6.0.7.9"
    assert result.tool == "fsl_deface"


def test_mri_deface_fills_in_templates_and_derives_the_mask(builtin_runs):
    volume, environment, runs = builtin_runs
    result, _ = runs["mri_deface"]
    assert result.status == "ok", result.reason
    templates = environment["MRI_DEFACE_TEMPLATES"]
    expected = shlex.join(
        [
            "mri_deface",
            "/W/input.nii.gz",
            f"{templates}/talairach_mixed_with_skull.gca",
            f"{templates}/face.gca",
            "/W/output.nii.gz",
        ]
    ).replace("/W", "{workdir}")
    assert result.command == expected
    np.testing.assert_array_equal(result.kept_mask.array, ~face())
    np.testing.assert_array_equal(result.image.array, volume.array * result.kept_mask.array)


def test_afni_refacer_output_and_face_shell_are_found(builtin_runs):
    volume, _, runs = builtin_runs
    result, version = runs["afni_refacer"]
    assert result.status == "ok", result.reason
    assert result.command == (
        "@afni_refacer_run -input {workdir}/input.nii.gz -mode_deface -no_images "
        "-prefix {workdir}/defaced.nii.gz"
    )
    removed = face()
    removed[-1] = True  # negative shell values are removed too
    np.testing.assert_array_equal(result.kept_mask.array, ~removed)
    np.testing.assert_array_equal(result.image.array, volume.array * result.kept_mask.array)
    assert version == "2.4"


def test_mask_face_keeps_its_replacement_values(builtin_runs):
    volume, _, runs = builtin_runs
    result, _ = runs["mask_face"]
    assert result.status == "ok", result.reason
    assert result.command == "mask_face {workdir}/input.nii.gz -nii -e 1"
    np.testing.assert_array_equal(result.kept_mask.array, ~face())
    assert np.all(result.image.array[face()] == 7.5)
    np.testing.assert_array_equal(result.image.array[~face()], volume.array[~face()])


def test_defacer_rounding_counts_as_unchanged(builtin_runs):
    volume, _, runs = builtin_runs
    result, version = runs["defacer"]
    assert result.status == "ok", result.reason
    np.testing.assert_array_equal(result.kept_mask.array, ~face())
    np.testing.assert_array_equal(result.image.array[~face()], volume.array[~face()])
    assert np.all(result.image.array[face()] == -5)
    assert version == "unknown"


def test_missing_template_file_makes_mri_deface_unavailable(tools):
    Path(tools["MRI_DEFACE_TEMPLATES"], "face.gca").unlink()
    defacer = CommandLineDefacer(builtin_tool_specs()["mri_deface"])
    ready, why = defacer.available()
    assert not ready
    assert f"required file {tools['MRI_DEFACE_TEMPLATES']}/face.gca not found" in why


# -- failures -------------------------------------------------------------------------------

QUICK = "import os, sys, time\n"
"""Prelude for stand-ins that need no nibabel (faster to start)."""


def test_nonzero_exit_fails_with_the_stderr_tail(bin_dir):
    write_program(
        bin_dir,
        "broken",
        """
for i in range(1, 31):
    print(f"problem {i:02d}", file=sys.stderr)
sys.exit(3)
""",
        QUICK,
    )
    result = CommandLineDefacer(ToolSpec("broken", "broken {input} {output}")).deface(scan())
    assert result.status == "failed"
    assert "exited with status 3" in result.reason
    assert "broken {workdir}/input.nii.gz {workdir}/output.nii.gz" in result.reason
    assert "problem 30" in result.reason and "problem 11" in result.reason
    assert "problem 10" not in result.reason


def test_timeout_kills_the_tool_and_its_children(bin_dir):
    write_program(
        bin_dir,
        "slow",
        """
import subprocess
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("working", file=sys.stderr, flush=True)
time.sleep(60)
""",
        QUICK,
    )
    started = time.perf_counter()
    spec = ToolSpec("slow", ["slow", "{input}", "{output}"], timeout=0.5)
    result = CommandLineDefacer(spec).deface(scan())
    assert time.perf_counter() - started < 20
    assert result.status == "failed"
    assert "timed out after 0.5 s" in result.reason
    assert "working" in result.reason


def test_missing_output_fails_listing_what_is_there(bin_dir):
    write_program(bin_dir, "lazy", 'print("all good")\n', QUICK)
    result = CommandLineDefacer(ToolSpec("lazy", "lazy {input} {output}")).deface(scan())
    assert result.status == "failed"
    assert "no output found" in result.reason
    assert "input.nii.gz" in result.reason
    assert "all good" in result.reason


def test_unreadable_output_fails(bin_dir):
    write_program(bin_dir, "garbage", 'open(sys.argv[2], "wb").write(b"not an image" * 50)\n')
    result = CommandLineDefacer(ToolSpec("garbage", "garbage {input} {output}")).deface(scan())
    assert result.status == "failed"
    assert "unreadable output {workdir}/output.nii.gz" in result.reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("affine = affine.copy(); affine[0, 3] += 1.0", "another grid"),
        ("data = data[:, :, :-2]", "shape"),
        ("affine = affine @ np.diag([-1.0, 1, 1, 1])", "another grid"),
    ],
)
def test_output_on_another_grid_is_refused(bin_dir, body, expected):
    write_program(
        bin_dir,
        "moved",
        f"data, affine = load(sys.argv[1])\n{body}\nsave(data, affine, sys.argv[2])",
    )
    result = CommandLineDefacer(ToolSpec("moved", "moved {input} {output}")).deface(scan())
    assert result.status == "failed"
    assert expected in result.reason
    assert "refused" in result.reason


def test_missing_executable_is_unavailable_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    defacer = CommandLineDefacer(ToolSpec("ghost", "ghost_tool {input} {output}"))
    assert defacer.available() == (False, "ghost: executable 'ghost_tool' not found on PATH")
    assert defacer.deface(scan()).status == "unavailable"


@pytest.mark.parametrize(
    ("mode", "expected"), [(None, "not found"), (0o644, "is not executable (chmod +x)")]
)
def test_executable_given_as_a_path_says_what_is_wrong_with_it(tmp_path, mode, expected):
    program = tmp_path / "tool"
    if mode is not None:
        program.write_text("#!/bin/sh\n")
        program.chmod(mode)
    defacer = CommandLineDefacer(ToolSpec("ghost", f"{program} {{input}} {{output}}"))
    assert defacer.available() == (False, f"ghost: executable '{program}' {expected}")


def test_unset_variable_in_environment_is_unavailable(bin_dir, monkeypatch):
    monkeypatch.delenv("DEFACING_TEST_UNSET", raising=False)
    spec = ToolSpec(
        "needs_env", "lazy {input} {output}", environment={"X": "${DEFACING_TEST_UNSET}/lib"}
    )
    write_program(bin_dir, "lazy", "", QUICK)
    ready, why = CommandLineDefacer(spec).available()
    assert not ready
    assert "DEFACING_TEST_UNSET is not set (environment.X)" in why


# -- masks, outputs, environment ------------------------------------------------------------

MASKED_TOOL = """
data, affine = load(sys.argv[1])
kept = np.ones(data.shape, np.uint8)
kept[BOX] = 0
save(np.where(kept == 1, data, 0).astype(data.dtype), affine, sys.argv[2])
save(kept, affine, sys.argv[3])
"""


def test_mask_convention_kept(bin_dir):
    write_program(bin_dir, "keeper", MASKED_TOOL)
    spec = ToolSpec("keeper", "keeper {input} {output} {mask}", mask=MaskSpec(convention="kept"))
    result = CommandLineDefacer(spec).deface(scan())
    assert result.status == "ok", result.reason
    np.testing.assert_array_equal(result.kept_mask.array, ~face())


def test_inverted_mask_convention_fails(bin_dir):
    write_program(bin_dir, "keeper", MASKED_TOOL)
    spec = ToolSpec("keeper", "keeper {input} {output} {mask}", mask=MaskSpec(convention="removed"))
    result = CommandLineDefacer(spec).deface(scan())
    assert result.status == "failed"
    assert "inverted" in result.reason


ZERO_BOX = """
data, affine = load(sys.argv[1])
data = data.copy()
data[BOX] = 0
save(data, affine, sys.argv[2])
"""


def test_output_patterns_are_tried_in_order(bin_dir):
    write_program(bin_dir, "suffixer", ZERO_BOX.replace("sys.argv[2]", '"result_v2.nii.gz"'))
    spec = ToolSpec(
        "suffixer", "suffixer {input} {output}", outputs=["{output}", "result_*.nii.gz"]
    )
    result = CommandLineDefacer(spec).deface(scan())
    assert result.status == "ok", result.reason
    np.testing.assert_array_equal(result.kept_mask.array, ~face())


def test_ambiguous_output_pattern_fails(bin_dir):
    write_program(
        bin_dir,
        "twice",
        ZERO_BOX.replace("save(data, affine, sys.argv[2])", "")
        + 'save(data, affine, "result_a.nii.gz")\nsave(data, affine, "result_b.nii.gz")\n',
    )
    spec = ToolSpec("twice", "twice {input}", outputs=["result_*.nii.gz"])
    result = CommandLineDefacer(spec).deface(scan())
    assert result.status == "failed"
    assert "ambiguous" in result.reason


def test_environment_and_params_reach_the_tool(bin_dir, monkeypatch):
    monkeypatch.setenv("DEFACING_TEST_ROOT", "/opt/somewhere")
    write_program(
        bin_dir,
        "picky",
        """
import shutil
if os.environ.get("PICKY_HOME") != "/opt/somewhere/picky":
    sys.exit(f"PICKY_HOME is {os.environ.get('PICKY_HOME')!r}")
if sys.argv[3] != "fast mode":
    sys.exit(f"mode is {sys.argv[3]!r}")
shutil.copy(sys.argv[1], sys.argv[2])
""",
        QUICK,
    )
    spec = ToolSpec(
        "picky",
        ["picky", "{input}", "{output}", "{mode}"],
        environment={"PICKY_HOME": "${DEFACING_TEST_ROOT}/picky"},
        params={"mode": "fast mode"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the copy changes no voxel
        result = CommandLineDefacer(spec).deface(scan())
    assert result.status == "ok", result.reason
    assert result.command.endswith("{workdir}/output.nii.gz 'fast mode'")


def test_shell_command(bin_dir):
    write_program(bin_dir, "zero_box", ZERO_BOX)
    spec = ToolSpec("piped", "zero_box {input} {output} && echo done", shell=True)
    result = CommandLineDefacer(spec).deface(scan())
    assert result.status == "ok", result.reason
    assert result.command == "zero_box {workdir}/input.nii.gz {workdir}/output.nii.gz && echo done"


def test_work_folder_is_removed_after_success_and_failure(bin_dir, tmp_path, monkeypatch):
    root = tmp_path / "scratch"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    write_program(bin_dir, "zero_box", ZERO_BOX)
    write_program(bin_dir, "lazy", "", QUICK)
    assert CommandLineDefacer(ToolSpec("a", "zero_box {input} {output}")).deface(scan()).status
    assert CommandLineDefacer(ToolSpec("b", "lazy {input} {output}")).deface(scan()).status
    assert list(root.iterdir()) == []


def test_spec_validation_in_python():
    with pytest.raises(SpecError, match=r"key 'command'.*\{input\}"):
        ToolSpec("bad", "tool {output}")
    with pytest.raises(SpecError, match="timeout"):
        ToolSpec("bad", "tool {input} {output}", timeout=-1)


# -- defacers.yaml --------------------------------------------------------------------------


def test_user_stanza_loads_and_runs(bin_dir, tmp_path):
    body = ZERO_BOX.replace("sys.argv[1]", 'arg("-i")').replace("sys.argv[2]", 'arg("-o")')
    write_program(bin_dir, "my_tool", body)
    config = tmp_path / "defacers.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            defacers:
              my_tool:
                description: a site tool
                command: "my_tool -i {input} -o {output}"
                outputs: ["{output}"]
                timeout: 600
                environment: {FOO: bar}
            """
        )
    )
    specs = load_tool_specs(config)
    assert list(specs) == ["my_tool"]
    assert specs["my_tool"].environment == {"FOO": "bar"}
    result = CommandLineDefacer(specs["my_tool"]).deface(scan())
    assert result.status == "ok", result.reason
    assert result.command == "my_tool -i {workdir}/input.nii.gz -o {workdir}/output.nii.gz"


STANZA = 'defacers:\n  my_tool:\n    command: "t -i {input} -o {output}"\n'


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    output: x.nii.gz\n", ["key 'output'", "did you mean 'outputs'"]),
        ("    timout: 5\n", ["key 'timout'", "did you mean 'timeout'"]),
        ("    env: {A: b}\n", ["key 'env'", "did you mean 'environment'"]),
        ("    timeout: ten\n", ["key 'timeout'", "must be a number"]),
        ("    timeout: -5\n", ["key 'timeout'", "positive"]),
        ("    environment: [A, B]\n", ["key 'environment'", "mapping"]),
        ("    environment: {A: yes}\n", ["key 'environment.A'", "quote it"]),
        ("    shell: 'yes'\n", ["key 'shell'", "true or false"]),
        ("    outputs: [3]\n", ["key 'outputs'", "non-empty string"]),
        ("    outputs: ['/tmp/x.nii.gz']\n", ["key 'outputs'", "relative"]),
        ("    outputs: ['{outptu}']\n", ["key 'outputs'", "{outptu}", "did you mean {output}"]),
        ("    mask: {convention: face}\n", ["key 'mask.convention'", "kept, removed"]),
        ("    mask: {paths: m.nii.gz, convention: kept}\n", ["'mask.paths'", "'path'"]),
        ("    unchanged_tolerance: -1\n", ["key 'unchanged_tolerance'", "zero or positive"]),
        ("    input_format: mgz\n", ["key 'input_format'", "nii.gz, nii"]),
        ("    requires: ['{template_dir}/a.gca']\n", ["key 'requires'", "{template_dir}"]),
    ],
)
def test_stanza_errors_name_file_stanza_and_key(tmp_path, extra, expected):
    config = tmp_path / "defacers.yaml"
    config.write_text(STANZA + extra)
    with pytest.raises(DefacerConfigError) as caught:
        load_tool_specs(config)
    message = str(caught.value)
    assert str(config) in message and "'my_tool'" in message
    for text in expected:
        assert text in message, message


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (None, ["key 'command'", "missing"]),
        ('"t -o {output}"', ["key 'command'", "{input}"]),
        ('"t -i {input}"', ["key 'outputs'", "no {output}"]),
        ('"t -i {inptu} -o {output}"', ["{inptu}", "did you mean {input}"]),
        ('"t -i {input} -o {output} -m {mask}"', ["key 'mask'", "convention"]),
        ("42", ["key 'command'", "string"]),
        ("'t \"unclosed {input}'", ["key 'command'", "cannot be split"]),
    ],
)
def test_command_errors(tmp_path, command, expected):
    body = "    timeout: 5\n" if command is None else f"    command: {command}\n"
    config = tmp_path / "defacers.yaml"
    config.write_text(f"defacers:\n  my_tool:\n{body}")
    with pytest.raises(DefacerConfigError) as caught:
        load_tool_specs(config)
    message = str(caught.value)
    assert str(config) in message and "'my_tool'" in message
    for text in expected:
        assert text in message, message


def test_misspelt_command_is_one_message(tmp_path):
    config = tmp_path / "defacers.yaml"
    config.write_text(STANZA.replace("command:", "comand:"))
    with pytest.raises(DefacerConfigError) as caught:
        load_tool_specs(config)
    [problem] = caught.value.problems
    assert f"{config}, line 3: defacer 'my_tool', key 'comand'" in problem
    assert "did you mean 'command'?" in problem


def test_error_names_the_line_of_the_key(tmp_path):
    config = tmp_path / "defacers.yaml"
    config.write_text(STANZA + "    timeout: -5\n")
    with pytest.raises(DefacerConfigError, match=r"line 4: defacer 'my_tool', key 'timeout'"):
        load_tool_specs(config)


def test_invalid_yaml_names_the_line(tmp_path):
    config = tmp_path / "defacers.yaml"
    config.write_text('defacers:\n  my_tool:\n    command: "t {input} {output}\n    timeout: 5\n')
    with pytest.raises(DefacerConfigError) as caught:
        load_tool_specs(config)
    message = str(caught.value)
    assert str(config) in message and "invalid YAML" in message and "line " in message


def test_duplicate_stanza_is_refused(tmp_path):
    config = tmp_path / "defacers.yaml"
    config.write_text(STANZA + STANZA.removeprefix("defacers:\n"))
    with pytest.raises(DefacerConfigError, match=r"line 4.*duplicate key 'my_tool'.*line 2"):
        load_tool_specs(config)


def test_unknown_top_level_key_and_bad_names(tmp_path):
    config = tmp_path / "defacers.yaml"
    config.write_text(STANZA.replace("defacers:", "defacer:"))
    with pytest.raises(DefacerConfigError, match="did you mean 'defacers'"):
        load_tool_specs(config)
    config.write_text(STANZA.replace("my_tool", "my tool"))
    with pytest.raises(DefacerConfigError, match="defacer name 'my tool'"):
        load_tool_specs(config)


def test_every_problem_is_reported_at_once(tmp_path):
    config = tmp_path / "defacers.yaml"
    config.write_text(
        "defacers:\n  one:\n    command: t\n  two:\n    command: 't {input}'\n    timout: 1\n"
    )
    with pytest.raises(DefacerConfigError) as caught:
        load_tool_specs(config)
    assert len(caught.value.problems) >= 3
    assert "'one'" in str(caught.value) and "'two'" in str(caught.value)


def test_empty_and_missing_files(tmp_path):
    assert parse_tool_specs("", "empty.yaml") == {}
    assert parse_tool_specs("defacers:\n", "empty.yaml") == {}
    with pytest.raises(DefacerConfigError, match="file not found"):
        load_tool_specs(tmp_path / "nope.yaml")
