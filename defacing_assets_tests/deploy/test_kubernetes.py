"""Kubernetes: the executor choice; the step pods dagster-k8s builds from our tags and values."""

import importlib.util
import sys
import tomllib
from types import SimpleNamespace

import pytest
import yaml
from dagster import Definitions
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config

from defacing_assets.assets.graph import STUDY_ASSETS
from defacing_assets.definitions import defs
from defacing_assets.execution import default_executor, gpu_slots
from defacing_assets.resources import study_resources
from defacing_assets_tests.deploy.conftest import REPO

VALUES = yaml.safe_load((REPO / "deploy" / "k8s" / "values.yaml").read_text())
[DEPLOYMENT] = VALUES["dagster-user-deployments"]["deployments"]


def _executor_of(executor) -> str:
    graph = Definitions(assets=STUDY_ASSETS, resources=study_resources(), executor=executor)
    return graph.resolve_implicit_global_asset_job_def().executor_def.name


def test_multiprocess_is_the_default_and_unchanged(monkeypatch):
    monkeypatch.delenv("DEFACING_EXECUTOR", raising=False)
    default = default_executor()
    assert _executor_of(default) == "gpu_aware_multiprocess"
    limits = default.apply_config_mapping({}).value["config"]["tag_concurrency_limits"]
    assert limits == [{"key": "defacing/resource", "value": "gpu", "limit": gpu_slots()}]
    monkeypatch.setenv("DEFACING_EXECUTOR", "multiprocess")
    assert (
        default_executor().apply_config_mapping({}).value == default.apply_config_mapping({}).value
    )


def test_k8s_executor_by_configuration(monkeypatch):
    monkeypatch.setenv("DEFACING_EXECUTOR", "k8s")
    assert _executor_of(default_executor()) == "k8s"
    limited = default_executor(max_concurrent=3)
    assert limited.apply_config_mapping({}).value["config"]["max_concurrent"] == 3
    monkeypatch.setenv("DEFACING_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="DEFACING_EXECUTOR='celery'"):
        default_executor()


def test_k8s_executor_without_the_deploy_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dagster_k8s", None)  # import fails as if not installed
    assert _executor_of(default_executor(kind="multiprocess")) == "gpu_aware_multiprocess"
    with pytest.raises(ImportError, match=r"defacing-assets\[deploy\]"):
        default_executor(kind="k8s")


def _step_pod(asset_name: str):
    """The pod spec of the step job k8s_job_executor would launch for ``asset_name``."""
    # The container context the chart gives the code location (includeConfigInLaunchedRuns).
    location = K8sContainerContext.create_from_config(
        {
            "k8s": {
                "env": DEPLOYMENT["env"],
                "volumes": DEPLOYMENT["volumes"],
                "volume_mounts": DEPLOYMENT["volumeMounts"],
            }
        }
    )
    tags = defs.get_assets_def(asset_name).op.tags
    step = location.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    # What K8sRunLauncher contributes (from the chart's instance), as the executor takes it.
    launcher = SimpleNamespace(
        job_image=None,
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
    )
    image = f"{DEPLOYMENT['image']['repository']}:{DEPLOYMENT['image']['tag']}"
    job = construct_dagster_k8s_job(
        step.get_k8s_job_config(image, launcher),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{asset_name.replace('_', '-')}",
        user_defined_k8s_config=step.run_k8s_config,
        component="step_worker",
    )
    return job.spec.template.spec


def _env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in DEPLOYMENT["env"]}


def test_gpu_step_job_asks_for_a_gpu_node():
    pod = _step_pod("unet_models")
    [container] = pod.containers
    assert container.resources.limits == {"nvidia.com/gpu": "1"}
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")
    ]
    assert container.image == "defacing-assets:0.1.0"
    env = {variable.name: variable.value for variable in container.env}
    assert env["DEFACING_EXECUTOR"] == "k8s" and env["DEFACING_STORAGE"] == "/data/store"
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("study", "/data")]
    assert {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes} == {
        "study": "defacing-study"
    }


def test_cpu_step_job_asks_for_no_gpu():
    pod = _step_pod("defaced_scans")
    [container] = pod.containers
    assert not (container.resources and container.resources.limits)
    assert not pod.node_selector and not pod.tolerations


def test_values_name_the_image_and_code_location_that_exist():
    assert DEPLOYMENT["dagsterApiGrpcArgs"] == ["--module-name", "defacing_assets.definitions"]
    assert importlib.util.find_spec("defacing_assets.definitions") is not None
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["dagster"]["module_name"] == "defacing_assets.definitions"
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yaml").read_text())
    built = compose["services"]["user_code"]
    assert built["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    image = f"{DEPLOYMENT['image']['repository']}:{DEPLOYMENT['image']['tag']}"
    assert built["image"] == "${DEFACING_IMAGE:-" + image + "}"
    assert DEPLOYMENT["image"]["tag"] == project["project"]["version"]
    assert DEPLOYMENT["image"]["repository"] == "defacing-assets"
    env = _env()
    assert env["DEFACING_EXECUTOR"] == "k8s"
    assert env["DEFACING_STORAGE"].startswith(DEPLOYMENT["volumeMounts"][0]["mountPath"])
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    assert VALUES["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert VALUES["dagsterDaemon"]["runRetries"]["enabled"] is True
    assert VALUES["concurrency"]["pools"]["defaultLimit"] >= 1
