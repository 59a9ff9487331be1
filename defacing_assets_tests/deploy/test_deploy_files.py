"""deploy/dagster.yaml through Dagster's own validation; the compose file and what it names;
the deployment's security defaults (loopback ports, no default passwords, no docker.sock,
a non-root image, Helm values without a password or an open ingress)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import docker.types
import pytest
import yaml
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config

from defacing_assets_tests.deploy.conftest import REPO

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yaml"
DOCKER_LAUNCHER = DEPLOY / "docker-compose.docker-launcher.yaml"
INSTANCE_PATH = "/opt/dagster/dagster_home/dagster.yaml"
PASSWORD = "not-a-real-password"
"""The one value the default compose file requires; any non-empty string."""
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|(^|_)SECRET($|_)|(^|_)KEY$", re.IGNORECASE)
"""Variables that hold a secret (not the proxy's SECRETS=0 switch, not a Secret's name)."""
PROXY_ALLOWED = {"CONTAINERS", "POST", "VERSION"}


class MissingVariable(Exception):
    """What Compose reports for ``${VAR:?message}`` when VAR is unset or empty."""


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:-|-|:\?|\?|:\+|\+)(?P<argument>.*))?",
    re.DOTALL,
)


def _interpolate_text(text: str, env: dict[str, str]) -> str:
    """One string as Compose interpolates it (compose-spec "Interpolation"): ``$$``,
    ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
    ``${VAR?error}``, ``${VAR:+alternative}``, ``${VAR+alternative}``."""

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        assert braced is not None, f"invalid interpolation {match[0]!r}"
        name, operator, argument = braced["name"], braced["operator"], braced["argument"]
        value = env.get(name)
        if operator is None:
            return value or ""
        if operator in (":?", "?") and (value is None or (operator == ":?" and not value)):
            raise MissingVariable(f"required variable {name} is missing a value: {argument}")
        if operator in (":?", "?"):
            return value
        if operator == ":-":
            return value if value else argument
        if operator == "-":
            return value if value is not None else argument
        if operator == ":+":
            return argument if value else ""
        return argument if value is not None else ""

    return _REFERENCE.sub(substitute, text)


def _interpolate(node, env: dict[str, str]):
    if isinstance(node, str):
        return _interpolate_text(node, env)
    if isinstance(node, dict):
        return {key: _interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, env) for value in node]
    return node


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _rendered(env: dict[str, str] | None = None) -> dict:
    """The default compose file with its variables filled in from ``env`` only."""
    return _interpolate(_load(COMPOSE), {"DAGSTER_PG_PASSWORD": PASSWORD} if env is None else env)


def _default_services(compose: dict) -> dict[str, dict]:
    """Services that `docker compose up` starts without a --profile."""
    return {name: s for name, s in compose["services"].items() if not s.get("profiles")}


def _host_ip(port) -> str | None:
    """The host address of one `ports` entry; None where Docker binds every interface."""
    if isinstance(port, dict):
        return port.get("host_ip")
    spec = str(port).split("/")[0]
    if spec.startswith("["):
        return spec[1:].partition("]")[0]
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 else None


def _mount_sources(service: dict) -> list[str]:
    return [
        str(v["source"]) if isinstance(v, dict) else str(v).split(":")[0]
        for v in service.get("volumes", [])
    ]


def _environment(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


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
    # Runs are processes of the user-code server: nothing needs the Docker socket.
    assert instance_config["run_launcher"]["class"] == "DefaultRunLauncher"


def test_docker_launcher_instance_is_the_default_one_with_the_docker_launcher(tmp_path):
    shutil.copy(DEPLOY / "dagster.docker-launcher.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    launcher = config["run_launcher"]
    assert launcher["class"] == "DockerRunLauncher"
    requests = launcher["config"]["container_kwargs"]["device_requests"]
    # docker-py builds its DeviceRequest from each mapping: the keys must be its own.
    [request] = [docker.types.DeviceRequest(**r) for r in requests]
    assert request["Capabilities"] == [["gpu"]] and request["Count"] == -1
    default = _load(DEPLOY / "dagster.yaml")
    variant = _load(DEPLOY / "dagster.docker-launcher.yaml")
    del default["run_launcher"], variant["run_launcher"]
    assert variant == default, "the two instances differ only in run_launcher"


def test_validation_would_catch_a_run_limit_under_the_coordinator(tmp_path):
    """The reason `max_concurrent_runs` sits under `concurrency.runs` (Dagster refuses both)."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["run_coordinator"]["config"]["max_concurrent_runs"] = 2
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        dagster_instance_config(str(tmp_path))


def test_compose_file_references_files_that_exist():
    compose = _load(COMPOSE)
    services = compose["services"]
    assert set(services) == {"postgres", "user_code", "webserver", "daemon", "auth_proxy"}
    build = services["user_code"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).is_file()
    for name in ("webserver", "daemon"):
        mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
        assert (DEPLOY / mounts[INSTANCE_PATH]).resolve() == (DEPLOY / "dagster.yaml")
        workspace = DEPLOY / mounts["/opt/dagster/workspace.yaml"]
        assert workspace.is_file()
        assert mounts["/data"] == "study"
    [location] = yaml.safe_load(workspace.read_text())["load_from"]
    server = location["grpc_server"]
    assert server["host"] == "user_code"
    command = services["user_code"]["command"]
    assert command[command.index("-p") + 1] == str(server["port"])
    assert command[command.index("-m") + 1] == "defacing_assets.definitions"
    proxy_conf = services["auth_proxy"]["volumes"][0].split(":")[0]
    assert (DEPLOY / proxy_conf).is_file()
    for variant in (DOCKER_LAUNCHER, DEPLOY / "docker-compose.gpu.yaml"):
        assert set(_load(variant)["services"]) <= set(services) | {"docker_socket_proxy"}
    # The Docker launcher mounts the compose volume and joins the compose network by name.
    variant = _load(DOCKER_LAUNCHER)["services"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in variant["daemon"]["volumes"]}
    launcher_file = DEPLOY / mounts[INSTANCE_PATH]
    launcher = _load(launcher_file)["run_launcher"]["config"]
    assert launcher["network"] == compose["networks"]["defacing"]["name"]
    assert launcher["container_kwargs"]["volumes"] == [
        f"{compose['volumes']['study']['name']}:/data"
    ]
    assert set(launcher["env_vars"]) <= set(services["daemon"]["environment"])
    # Files the Dockerfile copies are in the repository.
    dockerfile = (REPO / build["dockerfile"]).read_text()
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    for sources in copied:
        for source in sources:
            assert (REPO / source).exists(), source


@pytest.mark.parametrize("port", [None, "8080"])
def test_default_compose_publishes_ports_on_loopback_only(port):
    """The UI has no login: without a profile nothing is reachable from another machine,
    whatever host port the operator picks."""
    env = {"DAGSTER_PG_PASSWORD": PASSWORD} | ({"DAGSTER_WEBSERVER_PORT": port} if port else {})
    services = _default_services(_rendered(env))
    published = {
        (name, str(entry)): _host_ip(entry)
        for name, service in services.items()
        for entry in service.get("ports", [])
    }
    assert ("webserver", f"127.0.0.1:{port or 3000}:3000") in published
    assert {key: ip for key, ip in published.items() if ip != "127.0.0.1"} == {}
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        assert "ports" not in service or name == "webserver", f"{name} publishes a port"


def test_only_the_auth_profile_exposes_the_ui_and_it_asks_for_a_login():
    services = _rendered()["services"]
    exposed = {
        name
        for name, service in services.items()
        for entry in service.get("ports", [])
        if _host_ip(entry) != "127.0.0.1"
    }
    assert exposed == {"auth_proxy"}
    proxy = services["auth_proxy"]
    assert proxy["profiles"] == ["auth"]
    conf = (DEPLOY / proxy["volumes"][0].split(":")[0]).read_text()
    directives = {line.split()[0]: line.split()[1:] for line in conf.splitlines() if line.strip()}
    assert directives["listen"][-1] == "ssl;"
    assert directives["auth_basic_user_file"] == ["/etc/nginx/secrets/htpasswd;"]
    assert directives["ssl_certificate"] == ["/etc/nginx/secrets/tls.crt;"]
    assert directives["proxy_pass"] == ["http://webserver:3000;"]
    [secrets] = [v for v in proxy["volumes"] if isinstance(v, dict)]
    assert secrets["target"] == "/etc/nginx/secrets" and secrets["read_only"] is True
    assert secrets["bind"]["create_host_path"] is False, "no secrets, no proxy"


@pytest.mark.parametrize(
    "path", [COMPOSE, DOCKER_LAUNCHER, DEPLOY / "docker-compose.gpu.yaml"], ids=lambda p: p.name
)
def test_no_password_has_a_value_or_a_default(path):
    """Every password or secret comes from the operator: `${VAR:?message}`, never a literal
    and never `${VAR:-default}`."""
    text = path.read_text()
    defaults = re.findall(r"(?<!\$)\$\{(\w+)(?::?[-+])", text)
    assert [name for name in defaults if SECRET_NAME.search(name)] == []
    for name, service in _load(path)["services"].items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), (name, key, value)


def test_compose_refuses_to_start_without_the_password():
    for env in ({}, {"DAGSTER_PG_PASSWORD": ""}):
        with pytest.raises(MissingVariable, match="DAGSTER_PG_PASSWORD.*deploy/.env"):
            _rendered(env)
    services = _rendered()["services"]
    for name in ("postgres", "user_code", "webserver", "daemon"):
        environment = _environment(services[name])
        key = "POSTGRES_PASSWORD" if name == "postgres" else "DAGSTER_PG_PASSWORD"
        assert environment[key] == PASSWORD, name


def test_env_example_leaves_every_secret_empty():
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert "DAGSTER_PG_PASSWORD" in settings
    assert {k: v for k, v in settings.items() if SECRET_NAME.search(k) and v.strip()} == {}
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert ".env" in ignored and "secrets/" in ignored


def test_default_compose_mounts_no_docker_socket():
    for name, service in _load(COMPOSE)["services"].items():
        assert not [s for s in _mount_sources(service) if "docker.sock" in s], name


def test_docker_launcher_variant_reaches_docker_only_through_the_proxy():
    variant = _load(DOCKER_LAUNCHER)
    services = variant["services"]
    with_socket = {
        name: volume
        for name, service in services.items()
        for volume in service.get("volumes", [])
        if "docker.sock" in str(volume)
    }
    assert with_socket == {"docker_socket_proxy": "/var/run/docker.sock:/var/run/docker.sock:ro"}
    proxy = services["docker_socket_proxy"]
    assert "ports" not in proxy
    assert proxy["networks"] == ["docker_api"]
    assert variant["networks"]["docker_api"]["internal"] is True
    allowed = {key for key, value in _environment(proxy).items() if value != "0"}
    assert allowed == PROXY_ALLOWED
    assert all(_environment(proxy)[key] == "1" for key in PROXY_ALLOWED)
    for name in ("daemon", "webserver"):
        assert _environment(services[name])["DOCKER_HOST"] == "tcp://docker_socket_proxy:2375"
        assert set(services[name]["networks"]) == {"defacing", "docker_api"}
        assert f"./dagster.docker-launcher.yaml:{INSTANCE_PATH}:ro" in services[name]["volumes"]


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_runs_as_a_non_root_user():
    instructions = _instructions((DEPLOY / "docker" / "Dockerfile").read_text())
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users, "no USER: every container would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"} and group not in {"root", "0"}
    assert user.isdigit(), "numeric, so Kubernetes' runAsNonRoot can verify it"
    runs = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    assert f"useradd --uid {user}" in runs
    last_user = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "USER")
    assert not [i for i, (ins, _) in enumerate(instructions) if ins == "RUN" and i > last_user]


def _strings(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, (*path, str(index)))
    else:
        yield path, node


def test_helm_values_hold_no_password_and_expose_nothing_without_auth():
    values = _load(DEPLOY / "k8s" / "values.yaml")
    literal = [
        ".".join(path)
        for path, value in _strings(values)
        if re.search("password|passwd|token", path[-1], re.IGNORECASE)
        and isinstance(value, str | int)
        and not isinstance(value, bool)
        and str(value)
    ]
    assert literal == []
    assert values["generatePostgresqlPasswordSecret"] is False
    secret = values["global"]["postgresqlSecretName"]
    assert secret and values["postgresql"]["existingSecret"] == secret
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    ingress = values["ingress"]
    assert ingress["enabled"] is False
    annotations = ingress["annotations"]
    assert (
        annotations.get("nginx.ingress.kubernetes.io/auth-type") == "basic"
        and annotations.get("nginx.ingress.kubernetes.io/auth-secret")
    ) or annotations.get("nginx.ingress.kubernetes.io/auth-url")
    assert ingress["dagsterWebserver"]["tls"]["enabled"] is True
    [deployment] = values["dagster-user-deployments"]["deployments"]
    pod = deployment["podSecurityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert deployment["securityContext"]["allowPrivilegeEscalation"] is False


def _docker_compose() -> list[str]:
    """`docker compose` when this machine has it; skips the test otherwise."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here: `docker compose config` not run")
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(
            "the docker CLI here has no compose plugin (`docker compose version`: "
            f"{(probe.stderr or probe.stdout).strip()[:200]}): `docker compose config` not run"
        )
    return ["docker", "compose"]


def _compose_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = {key: os.environ[key] for key in ("PATH", "HOME", "DOCKER_CONFIG") if key in os.environ}
    return subprocess.run(
        [*_docker_compose(), "--env-file", str(empty), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=base | env,
    )


def test_docker_compose_config_publishes_loopback_only_and_needs_the_password(tmp_path):
    """Compose itself, where it is installed: the rendered ports, and the refusal."""
    refused = _compose_config(tmp_path, {})
    assert refused.returncode != 0
    assert "DAGSTER_PG_PASSWORD" in refused.stderr
    rendered = _compose_config(tmp_path, {"DAGSTER_PG_PASSWORD": PASSWORD})
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    assert "auth_proxy" not in services, "profiles stay off by default"
    ports = [(name, p) for name, s in services.items() for p in s.get("ports", [])]
    assert ports and all(_host_ip(p) == "127.0.0.1" for _, p in ports), ports
    assert not [
        name
        for name, s in services.items()
        for v in s.get("volumes", [])
        if "docker.sock" in str(v)
    ]
