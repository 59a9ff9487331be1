"""Fixtures of the deployment tests: a PostgreSQL server and an instance from deploy/dagster.yaml.

CI (``.ci/run``) starts a server and exports ``DAGSTER_PG_*``; without them a
throwaway server is started here with ``.ci/postgres.sh`` and stopped afterwards.
Each test gets a database of its own, dropped at the end, so nothing already on
the server is touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PG_VARIABLES = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _exports(text: str) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in text.splitlines())
    return {key: value for key, value in pairs if key in PG_VARIABLES}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dict[str, str]]:
    """``DAGSTER_PG_*`` of a running server: CI's, else a throwaway one started here."""
    if all(os.environ.get(name) for name in PG_VARIABLES):
        yield {name: os.environ[name] for name in PG_VARIABLES}
        return
    script = REPO / ".ci" / "postgres.sh"
    datadir = tempfile.mkdtemp(prefix="defacing-pg-")
    started = subprocess.run(
        ["bash", str(script), "start", datadir, str(_free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0:
        shutil.rmtree(datadir, ignore_errors=True)
        pytest.skip(
            "no PostgreSQL server could be started (DAGSTER_PG_* unset and "
            f".ci/postgres.sh failed: {started.stderr.strip()[-300:]})"
        )
    try:
        yield _exports(started.stdout)
    finally:
        subprocess.run(["bash", str(script), "stop", datadir], capture_output=True, timeout=60)
        shutil.rmtree(datadir, ignore_errors=True)


def _admin(server: dict[str, str], sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(
        host=server["DAGSTER_PG_HOST"],
        port=int(server["DAGSTER_PG_PORT"]),
        user=server["DAGSTER_PG_USERNAME"],
        password=server["DAGSTER_PG_PASSWORD"],
        dbname=server["DAGSTER_PG_DB"],
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


@pytest.fixture
def deploy_instance_env(postgres_server, tmp_path, monkeypatch) -> Iterator[Path]:
    """A fresh database and a DAGSTER_HOME holding deploy/dagster.yaml; yields that home."""
    database = f"defacing_test_{uuid.uuid4().hex[:10]}"
    _admin(postgres_server, f"create database {database}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    for name, value in {**postgres_server, "DAGSTER_PG_DB": database}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_DIR", str(tmp_path / "compute_logs"))
    try:
        yield home
    finally:
        _admin(postgres_server, f"drop database if exists {database} with (force)")
