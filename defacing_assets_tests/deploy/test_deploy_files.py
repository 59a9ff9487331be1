"""deploy/dagster.yaml through Dagster's own validation; the compose file and what it names."""

import shutil

import docker.types
import pytest
import yaml
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config

from defacing_assets_tests.deploy.conftest import REPO

DEPLOY = REPO / "deploy"


@pytest.fixture
def instance_config(tmp_path):
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    return config


def test_instance_yaml_passes_dagsters_validation(instance_config):
    postgres = instance_config["storage"]["postgres"]["postgres_db"]
    assert postgres["hostname"] == {"env": "DAGSTER_PG_HOST"}
    assert postgres["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert instance_config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert "max_concurrent_runs" not in instance_config["run_coordinator"]["config"]
    assert instance_config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert instance_config["concurrency"]["pools"]["default_limit"] >= 1
    assert instance_config["run_retries"]["enabled"] is True
    assert instance_config["run_retries"]["max_retries"] >= 1
    launcher = instance_config["run_launcher"]
    assert launcher["class"] == "DockerRunLauncher"
    requests = launcher["config"]["container_kwargs"]["device_requests"]
    # docker-py builds its DeviceRequest from each mapping: the keys must be its own.
    [request] = [docker.types.DeviceRequest(**r) for r in requests]
    assert request["Capabilities"] == [["gpu"]] and request["Count"] == -1


def test_validation_would_catch_a_run_limit_under_the_coordinator(tmp_path):
    """The reason `max_concurrent_runs` sits under `concurrency.runs` (Dagster refuses both)."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["run_coordinator"]["config"]["max_concurrent_runs"] = 2
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        dagster_instance_config(str(tmp_path))


def test_compose_file_references_files_that_exist():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "user_code", "webserver", "daemon"}
    build = services["user_code"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).is_file()
    for name in ("webserver", "daemon"):
        mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
        assert (DEPLOY / mounts["/opt/dagster/dagster_home/dagster.yaml"]).resolve() == (
            DEPLOY / "dagster.yaml"
        )
        workspace = DEPLOY / mounts["/opt/dagster/workspace.yaml"]
        assert workspace.is_file()
        assert mounts["/data"] == "study"
    [location] = yaml.safe_load(workspace.read_text())["load_from"]
    server = location["grpc_server"]
    assert server["host"] == "user_code"
    command = services["user_code"]["command"]
    assert command[command.index("-p") + 1] == str(server["port"])
    assert command[command.index("-m") + 1] == "defacing_assets.definitions"
    # The run launcher mounts the compose volume and joins the compose network by name.
    launcher = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["run_launcher"]["config"]
    assert launcher["network"] == compose["networks"]["defacing"]["name"]
    assert launcher["container_kwargs"]["volumes"] == [
        f"{compose['volumes']['study']['name']}:/data"
    ]
    environment = services["daemon"]["environment"]
    assert set(launcher["env_vars"]) <= set(environment)
    # Files the Dockerfile copies are in the repository.
    dockerfile = (REPO / build["dockerfile"]).read_text()
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    for sources in copied:
        for source in sources:
            assert (REPO / source).exists(), source
