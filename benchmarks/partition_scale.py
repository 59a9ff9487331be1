"""How the orchestration layer scales with partitions: 100 x 4 against 1,000 x 10.

For each scale, a fresh instance under a temporary DAGSTER_HOME gets that many
``subjects`` and ``defacers`` dynamic partitions, and a data folder of stand-in
subject folders (an empty ``image.nii.gz`` + ``label.nii.gz`` each: once every
subject is a partition, the discovery sensor only lists the folder; it reads
files only for new subjects). Timed, median of ``--repeats`` after one warm-up:

- definitions load: a fresh Python importing ``defacing_assets.definitions`` and
  building the repository snapshot the code server sends (one sample per repeat);
- one ``subject_discovery_sensor`` tick (in process, as the code server evaluates
  it, no new subject) and one ``defacer_registry_sensor`` tick (at 100 x 4 it
  proposes the fifth defacer available here; the request is not applied);
- the GraphQL ``assetNodes`` query (with partition keys and partition stats) of a
  ``dagster-webserver`` started on 127.0.0.1 against that instance.

Usage: python benchmarks/partition_scale.py [--scales 100x4,1000x10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance, build_sensor_context

from defacing_assets.resources import StudyConfig
from defacing_assets.sensors import defacer_registry_sensor, subject_discovery_sensor

REPO = Path(__file__).resolve().parents[1]
DEFACERS = [
    "original",
    "pydeface",
    "quickshear",
    "deepdefacer",
    "hnc_safe",
    "fsl_deface",
    "mri_deface",
    "afni_refacer",
    "mask_face",
    "defacer",
]
ASSET_NODES = """
query AssetNodes {
  assetNodes {
    id
    assetKey { path }
    isPartitioned
    partitionKeysByDimension { name partitionKeys }
    partitionStats { numMaterialized numMaterializing numFailed numPartitions }
  }
}
"""
LOAD = """
import time
started = time.perf_counter()
from dagster._core.remote_representation.external_data import RepositorySnap
from defacing_assets.definitions import defs
RepositorySnap.from_def(defs.get_repository_def())
print(time.perf_counter() - started)
"""


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def _timed(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up: imports, caches, first connection
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return _median(samples)


def _write_stand_ins(data: Path, n_subjects: int) -> list[str]:
    subjects = [f"S{i:05d}" for i in range(n_subjects)]
    for subject in subjects:
        folder = data / subject
        folder.mkdir(parents=True)
        (folder / "image.nii.gz").touch()
        (folder / "label.nii.gz").touch()
    return subjects


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(port: int, query: str, timeout: float = 300) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _webserver_query_seconds(environment: dict, repeats: int, expected_keys: int) -> float:
    """Median seconds of the assetNodes query on a webserver started for this instance."""
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(REPO / "workspace.yaml"),
        ],
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                answer = _graphql(port, ASSET_NODES, timeout=60)
                if answer.get("data", {}).get("assetNodes"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("dagster-webserver did not serve the asset graph")
            time.sleep(1)
        nodes = answer["data"]["assetNodes"]
        subjects = next(
            len(d["partitionKeys"])
            for n in nodes
            if n["assetKey"]["path"] == ["raw_scans"]
            for d in n["partitionKeysByDimension"]
        )
        assert subjects == expected_keys, (subjects, expected_keys)
        return _timed(lambda: _graphql(port, ASSET_NODES), repeats)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def measure(n_subjects: int, n_defacers: int, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="partition-scale-") as folder:
        root = Path(folder)
        home, data, study = root / "home", root / "data", root / "study"
        for path in (home, study):
            path.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        subjects = _write_stand_ins(data, n_subjects)
        environment = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DEFACING_DATA": str(data),
            "DEFACING_STUDY": str(study),
            "DEFACING_STORAGE": str(root / "store"),
            "DEFACING_PROFILE": "ci",
        }
        with DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions("subjects", subjects)
            instance.add_dynamic_partitions("defacers", DEFACERS[:n_defacers])
            study_config = StudyConfig(data_root=str(data), study_dir=str(study), profile="ci")

            def tick(sensor) -> Callable[[], object]:
                def run() -> object:
                    context = build_sensor_context(
                        instance=instance, resources={"study": study_config}
                    )
                    result = sensor(context)
                    # Discovery must only list; the registry sensor may propose a defacer
                    # available here but not among the first n (not applied: same work).
                    new = result.dynamic_partitions_requests
                    assert sensor is defacer_registry_sensor or not new, new
                    return result

                return run

            results = {
                "subject_discovery_sensor tick": _timed(tick(subject_discovery_sensor), repeats),
                "defacer_registry_sensor tick": _timed(tick(defacer_registry_sensor), repeats),
            }
        loads = [
            float(
                subprocess.run(
                    [sys.executable, "-c", LOAD],
                    env=environment,
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()[-1]
            )
            for _ in range(repeats)
        ]
        results = {"definitions load": _median(loads), **results}
        results["GraphQL assetNodes"] = _webserver_query_seconds(environment, repeats, n_subjects)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="100x4,1000x10")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    scales = [tuple(int(n) for n in scale.split("x")) for scale in args.scales.split(",")]
    table = {}
    for n_subjects, n_defacers in scales:
        table[(n_subjects, n_defacers)] = measure(n_subjects, n_defacers, args.repeats)
        print(f"{n_subjects} x {n_defacers}: {table[(n_subjects, n_defacers)]}", flush=True)
    small, large = table[scales[0]], table[scales[-1]]
    header = " | ".join(f"{s} x {d} (s)" for s, d in scales)
    print(f"\n| measure | {header} | ratio | target <= 3 |")
    print("|---|" + "---|" * (len(scales) + 2))
    for name in small:
        ratio = large[name] / small[name]
        cells = " | ".join(f"{table[scale][name]:.3f}" for scale in scales)
        print(f"| {name} | {cells} | {ratio:.2f} | {'met' if ratio <= 3 else 'missed'} |")


if __name__ == "__main__":
    main()
