"""Issue 9, the user's path in the Dagster UI: a real webserver and a real browser.

``dagster-webserver`` serves ``workspace.yaml`` against a `ci` instance of two
synthetic subjects; GraphQL must show the graph DESIGN.md describes, and headless
Chromium must show the asset graph and launch one ``defaced_scans`` partition
that succeeds. Screenshots go to ``$DEFACING_TEST_ARTIFACTS`` (default: the
test's tmp folder). Skipped only where no Chromium is installed (CI installs
Debian's ``chromium``; Playwright drives it, no browser download).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, MultiPartitionKey, materialize
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from defacing_assets.assets.ingest import raw_scans
from defacing_assets_tests.conftest import study_resources

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["SYN001", "SYN002"]
DEFACERS = ["original", "pydeface"]
LAUNCHED = MultiPartitionKey({"subject": "SYN001", "defacer": "pydeface"})

# DESIGN.md, "The asset chain": each asset's partitions, and the inputs that what it holds
# is computed from (kept masks and labels, QC verdicts, folds, models, Table 1 ...).
SUBJECT_X_DEFACER = {"subject": "subjects", "defacer": "defacers"}
TRAIN_X_EVAL = {"train_defacer": "defacers", "eval_defacer": "defacers"}
EXPECTED_PARTITIONS = {
    "raw_scans": "subjects",
    "defaced_scans": SUBJECT_X_DEFACER,
    "qc_labels": SUBJECT_X_DEFACER,
    "voxel_ratios": SUBJECT_X_DEFACER,
    "study_cohort": None,
    "voxel_loss": None,
    "unet_models": {"fold": ["0", "1", "2", "3", "4"], "defacer": "defacers"},
    "predictions": TRAIN_X_EVAL,
    "segmentation_metrics": TRAIN_X_EVAL,
    "stats_tables": None,
    "study_report": None,
}
EXPECTED_EDGES = {
    ("raw_scans", "defaced_scans"),
    ("raw_scans", "qc_labels"),
    ("defaced_scans", "qc_labels"),
    ("raw_scans", "voxel_ratios"),
    ("defaced_scans", "voxel_ratios"),
    ("qc_labels", "study_cohort"),
    ("qc_labels", "voxel_loss"),
    ("voxel_ratios", "voxel_loss"),
    ("raw_scans", "unet_models"),
    ("defaced_scans", "unet_models"),
    ("study_cohort", "unet_models"),
    ("unet_models", "predictions"),
    ("defaced_scans", "predictions"),
    ("study_cohort", "predictions"),
    ("predictions", "segmentation_metrics"),
    ("raw_scans", "segmentation_metrics"),
    ("defaced_scans", "segmentation_metrics"),
    ("segmentation_metrics", "stats_tables"),
    ("voxel_loss", "stats_tables"),
    ("study_cohort", "stats_tables"),
    *(
        (upstream, "study_report")
        for upstream in (
            "raw_scans",
            "defaced_scans",
            "qc_labels",
            "voxel_ratios",
            "study_cohort",
            "voxel_loss",
            "segmentation_metrics",
            "stats_tables",
        )
    ),
}


def find_chromium() -> str | None:
    """``$DEFACING_CHROMIUM``, else a Chromium or Chrome on PATH."""
    candidates = [os.environ.get("DEFACING_CHROMIUM", "")]
    candidates += [shutil.which(name) or "" for name in ("chromium", "chromium-browser")]
    candidates += [shutil.which(name) or "" for name in ("google-chrome", "google-chrome-stable")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Webserver:
    def __init__(self, url: str, home: Path, log: Path):
        self.url, self.home, self.log = url, home, log

    def graphql(self, query: str, **variables) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        assert "errors" not in answer, answer["errors"]
        return answer["data"]

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


@pytest.fixture(scope="module")
def webserver(ci_cohort, tmp_path_factory):
    """`dagster-webserver` on a free 127.0.0.1 port, its own process group killed afterwards.

    The instance (SQLite under a tmp DAGSTER_HOME, telemetry off, runs launched at once:
    Dagster's default queued coordinator needs a daemon) knows both subjects and two
    cheap defacers, and SYN001's raw scan is materialized, so a `defaced_scans`
    partition can run from the UI.
    """
    root = tmp_path_factory.mktemp("ui")
    home, study = root / "dagster_home", root / "study"
    home.mkdir()
    study.mkdir()
    # Dagster's one-time "Join the community" dialog, recorded as dismissed the way the UI
    # records it: it may otherwise open over the launch dialog at any moment.
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    resources = study_resources(ci_cohort, study)
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("subjects", SUBJECTS)
        instance.add_dynamic_partitions("defacers", DEFACERS)
        assert materialize(
            [raw_scans], partition_key="SYN001", instance=instance, resources=resources
        ).success

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "DEFACING_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DEFACING_DATA=str(ci_cohort),
        DEFACING_STUDY=str(study),
        DEFACING_STORAGE=str(study / "store"),
        DEFACING_SCRATCH=str(study / "scratch"),
        DEFACING_PROFILE="ci",
    )
    port = _free_port()
    executable = Path(sys.executable).parent / "dagster-webserver"
    log = root / "webserver.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(executable), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Webserver(f"http://127.0.0.1:{port}", home, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"webserver exited:\n{server.log_tail()}"
            assert time.monotonic() < deadline, f"webserver not ready:\n{server.log_tail()}"
            try:
                [entry] = server.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
                continue
            if entry["loadStatus"] == "LOADED":
                assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
                break
            time.sleep(0.5)
        yield server
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        print(f"webserver log: {log}")


ASSETS_QUERY = """{ assetNodes {
  assetKey { path }
  partitionDefinition { type name dimensionTypes { name type dynamicPartitionsDefinitionName } }
  partitionKeysByDimension { name partitionKeys }
  dependencyKeys { path }
} }"""


def _partitions(node: dict):
    """One asset's partitioning as DESIGN.md writes it: the dynamic definition's name, or
    per dimension that name or the static keys; ``None`` when unpartitioned."""
    definition = node["partitionDefinition"]
    if definition is None:
        return None
    if definition["type"] == "DYNAMIC":
        return definition["name"]
    if definition["type"] != "MULTIPARTITIONED":
        return definition["type"]
    keys = {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]}
    return {
        d["name"]: d["dynamicPartitionsDefinitionName"]
        if d["type"] == "DYNAMIC"
        else keys[d["name"]]
        for d in definition["dimensionTypes"]
    }


def test_graphql_serves_the_designed_assets_partitions_and_edges(webserver):
    nodes = webserver.graphql(ASSETS_QUERY)["assetNodes"]
    by_name = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert set(by_name) == set(EXPECTED_PARTITIONS)
    assert {name: _partitions(node) for name, node in by_name.items()} == EXPECTED_PARTITIONS
    edges = {
        ("/".join(dependency["path"]), name)
        for name, node in by_name.items()
        for dependency in node["dependencyKeys"]
    }
    assert sorted(edges - EXPECTED_EDGES) == [], "edges DESIGN.md does not describe"
    assert sorted(EXPECTED_EDGES - edges) == [], "edges DESIGN.md describes, missing"


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("DEFACING_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set DEFACING_CHROMIUM)")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def _shown(name: str, labels: list[str]) -> bool:
    """A node label is the name, or the name cut in the middle (``segmentat…metrics``)."""
    for label in labels:
        head, cut, tail = label.partition("…")
        if label == name or (cut and name.startswith(head) and name.endswith(tail)):
            return True
    return False


RUNS_QUERY = """query($partition: String!) { runsOrError(filter: {tags: [
  {key: "dagster/partition", value: $partition}]}) { ... on Runs { results { runId status } } } }"""


def test_browser_shows_the_graph_and_launches_a_defaced_scans_partition(page, webserver, artifacts):
    page.goto(f"{webserver.url}/asset-groups")
    page.get_by_text("Materialize all").wait_for()
    for _ in range(4):  # until the graph has registered its shortcut, a key press is lost
        page.keyboard.press("Alt+e")  # the graph's "Expand all groups" (its settings menu)
        try:
            page.get_by_text("study_report", exact=True).wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            continue
    shown = page.locator("[class*='AssetNode_assetName']").all_inner_texts()
    graph_png = artifacts / "asset_graph.png"
    page.screenshot(path=str(graph_png))
    print(f"screenshot: {graph_png}")
    assert [name for name in EXPECTED_PARTITIONS if not _shown(name, shown)] == [], shown

    page.goto(f"{webserver.url}/assets/defaced_scans")
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Partition selection").wait_for()
    for value in (LAUNCHED.keys_by_dimension["defacer"], LAUNCHED.keys_by_dimension["subject"]):
        dialog.get_by_text("Select a partition or create one").first.click()
        page.get_by_role("menuitem").filter(has=page.get_by_title(value, exact=True)).click()
        page.keyboard.press("Escape")
    launch_png = artifacts / "launch_dialog.png"
    page.screenshot(path=str(launch_png))
    dialog.get_by_role("button", name="Launch 1 run").click()
    page.get_by_text("Launched run").wait_for()
    page.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url("**/runs/**")

    deadline = time.monotonic() + 180
    while True:
        runs = webserver.graphql(RUNS_QUERY, partition=str(LAUNCHED))["runsOrError"]["results"]
        status = runs[0]["status"] if runs else "NOT_LAUNCHED"
        if status in ("SUCCESS", "FAILURE", "CANCELED") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(runs) == 1, runs
    assert runs[0]["runId"] in page.url
    if status == "SUCCESS":  # the run page shows it too (it follows the run live)
        page.get_by_text("Success", exact=True).first.wait_for()
    run_png = artifacts / "run_page.png"
    page.screenshot(path=str(run_png))
    print(f"screenshot: {run_png}")
    assert status == "SUCCESS", f"run {runs[0]['runId']}: {status}\n{webserver.log_tail()}"

    with DagsterInstance.from_config(str(webserver.home)) as instance:
        done = instance.get_materialized_partitions(AssetKey("defaced_scans"))
    assert {str(key) for key in done} == {str(LAUNCHED)}
