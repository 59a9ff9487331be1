"""A killed ``deface`` leaves no tool running and no un-defaced copy behind (issue 22, item 4).

The external tool is a shell script that writes its pid and the pid of a
child it starts, then waits. ``defacing-assets deface`` runs it as a
subprocess and is killed while the tool runs: SIGTERM must stop the tool and
its child and remove the work folder before the command exits; SIGKILL
cannot run any cleanup, so the tool and its child must still die (the
guardian notices its parent's death) and the work folder is swept by the
next ``deface``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from defacing_assets.defacers.external import (
    WORKDIR_PREFIX,
    CommandLineDefacer,
    ToolSpec,
    sweep_stale_workdirs,
)
from defacing_assets.imaging import Volume
from defacing_assets.imaging.io import process_alive
from defacing_assets_tests.builders import AFFINE, tiny_image, write_nifti

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")

SLOW_TOOL = """\
#!/bin/sh
sleep 300 &
echo $! > "$PID_DIR/child"
echo $$ > "$PID_DIR/tool"
wait
"""


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def setup(tmp_path):
    """A study whose ``slow`` defacer is the script above, an input, and the environment."""
    bin_dir, study, pids, scratch = (tmp_path / n for n in ("bin", "study", "pids", "tmp"))
    for folder in (bin_dir, study, pids, scratch):
        folder.mkdir()
    tool = bin_dir / "slow_tool"
    tool.write_text(SLOW_TOOL)
    tool.chmod(0o755)
    (study / "defacers.yaml").write_text(
        "defacers:\n  slow:\n    command: slow_tool {input} {output}\n    timeout: 600\n"
    )
    source = write_nifti(tmp_path / "in.nii.gz", tiny_image())
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PID_DIR": str(pids),
        "TMPDIR": str(scratch),
    }
    yield tmp_path, study, pids, scratch, source, environment
    for name in ("tool", "child"):  # never leave a sleeper behind, whatever failed
        path = pids / name
        if path.exists() and path.read_text().strip():
            pid = int(path.read_text())
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def _start_deface(root: Path, study: Path, source: Path, environment: dict) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "defacing_assets.cli",
        "deface",
        "--method",
        "slow",
        "--study",
        str(study),
        str(source),
        str(root / "out.nii.gz"),
        "--kept-mask",
        str(root / "kept.nii.gz"),
    ]
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _tool_pids(pids: Path, deface: subprocess.Popen) -> list[int]:
    def written() -> bool:
        if deface.poll() is not None:
            raise AssertionError(f"deface ended early: {deface.communicate()}")
        return all(
            (pids / n).exists() and (pids / n).read_text().strip() for n in ("tool", "child")
        )

    _wait_for(written, 60, "the tool to start")
    found = [int((pids / name).read_text()) for name in ("tool", "child")]
    assert all(process_alive(pid) for pid in found)
    return found


def _work_folders(scratch: Path) -> list[Path]:
    return sorted(p for p in scratch.iterdir() if p.name.startswith(WORKDIR_PREFIX))


def test_sigterm_stops_the_tool_and_its_child_and_removes_the_work_folder(setup):
    root, study, pids, scratch, source, environment = setup
    deface = _start_deface(root, study, source, environment)
    tool_pids = _tool_pids(pids, deface)
    [workdir] = _work_folders(scratch)
    assert (workdir / "input.nii.gz").exists()  # the un-defaced copy

    deface.send_signal(signal.SIGTERM)
    _, stderr = deface.communicate(timeout=30)
    assert deface.returncode == 128 + signal.SIGTERM, stderr
    _wait_for(lambda: not any(map(process_alive, tool_pids)), 10, "the tool to die")
    assert _work_folders(scratch) == []
    assert not (root / "out.nii.gz").exists() and not (root / "kept.nii.gz").exists()


def test_sigkill_leaves_no_tool_running_and_the_next_start_sweeps_the_work_folder(setup):
    root, study, pids, scratch, source, environment = setup
    deface = _start_deface(root, study, source, environment)
    tool_pids = _tool_pids(pids, deface)

    deface.send_signal(signal.SIGKILL)
    deface.wait(timeout=30)
    _wait_for(lambda: not any(map(process_alive, tool_pids)), 10, "the orphaned tool to die")
    [left] = _work_folders(scratch)  # nothing could remove it: the next start must
    assert f"{WORKDIR_PREFIX}{deface.pid}-" in left.name

    young = subprocess.run(
        [sys.executable, "-m", "defacing_assets.cli", "deface", "--method", "original"]
        + [str(source), str(root / "copy.nii.gz")],
        env=environment,
        capture_output=True,
        check=True,
    )
    assert young.returncode == 0
    assert _work_folders(scratch) == [left]  # too young: its owner might be on another host

    past = time.time() - 3600
    os.utime(left, (past, past))
    subprocess.run(
        [sys.executable, "-m", "defacing_assets.cli", "deface", "--method", "original"]
        + [str(source), str(root / "copy.nii.gz")],
        env=environment,
        capture_output=True,
        check=True,
    )
    assert _work_folders(scratch) == []


def test_sweep_keeps_live_and_foreign_folders(tmp_path):
    from defacing_assets.defacers.external import _host_tag

    past = time.time() - 3600
    finished = subprocess.Popen(["true"])
    finished.wait()
    names = {
        "dead": f"{WORKDIR_PREFIX}{finished.pid}-{_host_tag()}-tool-abc",
        "live": f"{WORKDIR_PREFIX}{os.getpid()}-{_host_tag()}-tool-abc",
        "foreign": f"{WORKDIR_PREFIX}{finished.pid}-00000000-tool-abc",
        "other": "something-else",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "input.nii.gz").write_bytes(b"patient")
        os.utime(tmp_path / name, (past, past))
    assert sweep_stale_workdirs(tmp_path) == [tmp_path / names["dead"]]
    assert sweep_stale_workdirs(tmp_path, foreign_age_s=60) == [tmp_path / names["foreign"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["live"], names["other"]])


def test_leftover_children_of_a_finished_tool_are_killed(tmp_path, monkeypatch):
    """A tool that exits while a child it started in the background still runs: the
    guardian kills the tool's process group, so nothing it started outlives the run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "leaky"
    script.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            sleep 300 > /dev/null 2>&1 &
            echo $! > {tmp_path / "child"}
            exec cp "$1" "$2"
        """)
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the copy changes no voxel
        result = CommandLineDefacer(ToolSpec("leaky", "leaky {input} {output}")).deface(
            Volume(tiny_image(), AFFINE)
        )
    child = int((tmp_path / "child").read_text())
    try:
        _wait_for(lambda: not process_alive(child), 10, "the background child to die")
    finally:
        if process_alive(child):
            os.kill(child, signal.SIGKILL)
    assert result.status == "ok", result.reason


def test_the_guardian_reports_the_tool_as_before(tmp_path, monkeypatch):
    """Through the guardian a tool's signal death and a program that cannot start read as
    they did when the tool was our direct child."""
    from defacing_assets.defacers.base import DefacingFailed

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "suicidal").write_text("#!/bin/sh\nkill -KILL $$\n")
    (bin_dir / "suicidal").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    volume = Volume(tiny_image(), AFFINE)
    result = CommandLineDefacer(ToolSpec("s", "suicidal {input} {output}")).deface(volume)
    assert result.status == "failed" and "exited with status -9" in result.reason
    missing = CommandLineDefacer(ToolSpec("m", "no_such_program_xyz {input} {output}"))
    with pytest.raises(DefacingFailed, match="could not start no_such_program_xyz .*No such file"):
        missing.compute(volume, "MR")
