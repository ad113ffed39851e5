"""The deployment files (issue 18): Dockerfile, Compose, Kubernetes, nginx, checked offline.

- Compose files against the Compose Specification's JSON schema (the copy check-jsonschema
  ships), and with ``docker compose config`` where the compose plugin is installed.
- Kubernetes manifests against the official OpenAPI-derived schemas that kubernetes-validate
  ships (strict: an unknown field fails), rendered by ``kubectl kustomize`` where kubectl is
  installed, and the things a schema cannot see: probe paths, drain timing, the HPA's metric.
- nginx.conf with ``nginx -t`` (Debian's nginx, installed by tests/services.sh).
- The Dockerfile's shape; ``docker build`` where a daemon answers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from tests.deploy_support import COMPOSE, K8S, ROOT, nginx_config

K8S_VERSIONS = ("1.30", "1.37")  # the oldest supported by the preStop/HPA fields, the newest
COMPOSE_FILES = ("compose.yaml", "compose.lb.yaml", "kefu-node.yaml", "services.yaml")


def _manifests() -> list[dict]:
    """The resources kustomization.yaml lists, as kustomize renders them when kubectl is
    here, else read file by file (the same resources without the namespace and labels)."""
    if shutil.which("kubectl"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc
    ]


def _by_kind(kind: str) -> dict:
    (found,) = [doc for doc in _manifests() if doc["kind"] == kind]
    return found


def _check_jsonschema(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


# -- Compose ---------------------------------------------------------------------------------


def test_compose_files_match_the_compose_specification():
    out = _check_jsonschema(*(str(COMPOSE / name) for name in COMPOSE_FILES))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_compose_schema_check_rejects_a_wrong_file(tmp_path):
    """The validator really validates: a misspelt key and a wrong type fail."""
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  kefu:\n    image: kefu\n    restart_policy: always\n")
    assert _check_jsonschema(str(bad)).returncode != 0
    bad.write_text("services:\n  kefu:\n    image: kefu\n    ports: 8080\n")
    assert _check_jsonschema(str(bad)).returncode != 0


def test_compose_setup_what_the_files_promise():
    single = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    lb = yaml.safe_load((COMPOSE / "compose.lb.yaml").read_text())
    node = yaml.safe_load((COMPOSE / "kefu-node.yaml").read_text())["services"]["kefu"]
    services = yaml.safe_load((COMPOSE / "services.yaml").read_text())
    assert {"postgres", "redis", "prometheus"} <= set(services["services"])
    assert set(services["volumes"]) == {"postgres-data", "redis-data", "prometheus-data"}
    for project in (single, lb):
        assert project["include"] == ["services.yaml"]
        for name, service in project["services"].items():
            if name.startswith("kefu"):
                assert service["extends"] == {"file": "kefu-node.yaml", "service": "kefu"}
                assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
                (volume,) = service["volumes"]
                assert volume.split(":")[0] in project["volumes"]  # a named volume
    assert {"kefu", "kefu-b", "nginx"} <= set(lb["services"])
    # secrets come from env files, of which only examples are committed
    assert node["env_file"] == ["kefu.env"]
    assert services["services"]["postgres"]["env_file"] == ["postgres.env"]
    ignored = (COMPOSE / ".gitignore").read_text().split()
    assert {"kefu.env", "postgres.env"} <= set(ignored)
    example = (COMPOSE / "kefu.env.example").read_text()
    assert re.search(r"^KEFU_SERVER__SECRET=.{32,}$", example, re.M)
    assert node["environment"]["KEFU_BUS__BACKEND"] == "redis"  # several workers need it
    # kefu's drain fits in the grace period Compose gives before SIGKILL
    image_config = tomllib.loads((ROOT / "deploy/docker/kefu.toml").read_text())
    assert image_config["server"]["drain_timeout"] < int(node["stop_grace_period"].rstrip("s"))
    prometheus = yaml.safe_load((COMPOSE / "prometheus/prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == [
        "kefu:8080"
    ]


def _docker_compose_available() -> bool:
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(
    not _docker_compose_available(),
    reason="the docker compose plugin is not installed here; the files were checked against "
    "the Compose Specification schema instead",
)
@pytest.mark.parametrize("name", ["compose.yaml", "compose.lb.yaml"])
def test_docker_compose_config_accepts_the_files(tmp_path, name):
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE, work)
    shutil.copy(work / "kefu.env.example", work / "kefu.env")
    shutil.copy(work / "postgres.env.example", work / "postgres.env")
    out = subprocess.run(
        ["docker", "compose", "-f", name, "config", "--quiet"],
        cwd=work, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


# -- Kubernetes ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_official_schemas(version):
    import kubernetes_validate

    manifests = _manifests()
    kinds = sorted(doc["kind"] for doc in manifests)
    assert kinds == sorted(
        ["Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Ingress",
         "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    )  # fmt: skip
    for doc in manifests:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_kubernetes_schema_check_rejects_a_wrong_manifest():
    import kubernetes_validate

    deployment = _by_kind("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["pathh"] = "/readyz"  # unknown field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.37", strict=True)


async def test_deployment_probes_call_endpoints_that_exist(aiohttp_client, data_dir_config):
    """/readyz for readiness, /healthz for liveness: both answer on a real kernel."""
    from kefu.core.kernel import load_kernel
    from kefu.core.web_app import create_app

    container = _by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    client = await aiohttp_client(create_app(load_kernel(data_dir_config)))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = container[probe]["httpGet"]["path"]
        assert (await client.get(path)).status == 200, path


def test_deployment_drains_within_its_grace_period():
    spec = _by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    settings = _by_kind("ConfigMap")["data"]
    drain = float(settings["KEFU_SERVER__DRAIN_TIMEOUT"])
    assert pause > 0 and pause + drain < spec["terminationGracePeriodSeconds"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    env_from = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert env_from == {"kefu-settings", "kefu-secrets"}
    secret = _by_kind("Secret")["stringData"]
    assert {"KEFU_SERVER__SECRET", "KEFU_SQL__URL", "KEFU_BUS_REDIS__URL"} <= set(secret)
    assert len(secret["KEFU_SERVER__SECRET"]) >= 32
    pdb = _by_kind("PodDisruptionBudget")["spec"]
    assert pdb["selector"] == _by_kind("Deployment")["spec"]["selector"]


def test_hpa_scales_on_the_connection_metric_the_adapter_serves():
    """The HPA's external metric is the name prometheus-adapter's rule gives it, and the
    rule reads a series the exporter really has (docs/metrics.md)."""
    hpa = _by_kind("HorizontalPodAutoscaler")["spec"]
    (external,) = [m["external"] for m in hpa["metrics"] if m["type"] == "External"]
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["external"]
    assert rule["name"]["as"] == external["metric"]["name"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"])[1]
    assert (
        series == "kefu_connections"
        and f"| `{series}` | gauge |" in (ROOT / "docs/metrics.md").read_text()
    )
    assert series in rule["metricsQuery"] and "max by (namespace, worker)" in rule["metricsQuery"]
    assert external["target"]["type"] == "AverageValue"


def test_ingress_keeps_websockets_open():
    annotations = _by_kind("Ingress")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert int(annotations[prefix + "proxy-read-timeout"]) >= 3600
    assert int(annotations[prefix + "proxy-send-timeout"]) >= 3600


# -- nginx -----------------------------------------------------------------------------------


def test_nginx_config_passes_nginx_t(tmp_path):
    if shutil.which("nginx") is None:
        from tests.conftest import service_unavailable

        service_unavailable("nginx (Debian's package, installed by tests/services.sh)")
    conf = nginx_config(tmp_path, 18080, ["127.0.0.1:18081", "127.0.0.1:18082"])
    out = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr


def test_nginx_config_upgrades_websockets():
    text = (COMPOSE / "nginx/nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in text
    assert "proxy_http_version 1.1;" in text
    assert re.search(r"proxy_read_timeout (\d+)s;", text)[1] == "3600"
    assert "ip_hash" not in text and "sticky" not in text  # no stickiness needed


# -- the image -------------------------------------------------------------------------------


def test_dockerfile_shape():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.M)
    assert stages == ["build", "runtime"]
    build, runtime = text.split("AS runtime")
    assert "pip wheel" in build and "--no-index" in runtime  # the wheel is built in stage 1
    assert re.search(r"^USER 10001:10001$", runtime, re.M)  # non-root
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", runtime, re.M)
    assert re.search(r'^ENTRYPOINT \["kefu"\]$', runtime, re.M)  # exec form: kefu is PID 1
    assert re.search(r'^CMD \["run"\]$', runtime, re.M)
    # what the Dockerfile copies is not excluded by .dockerignore
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for source in re.findall(r"^COPY (?!--)(\S+(?: \S+)*?) \S+$", text, re.M):
        for path in source.split():
            assert any(path == a or path.startswith(a + "/") for a in allowed), path


def test_image_config_is_valid_and_serves_on_every_interface(tmp_path):
    """Every plugin's section of the image's kefu.toml validates, with the environment the
    Compose and Kubernetes files give it."""
    from kefu.core.kernel import load_kernel

    environ = {
        "KEFU_SERVER__DATA_DIR": str(tmp_path),
        "KEFU_SERVER__SECRET": "s" * 48,
        "KEFU_SERVER__WORKERS": "2",
        "KEFU_BUS__BACKEND": "redis",
        "KEFU_BUS_REDIS__URL": "redis://redis:6379/0",
        "KEFU_SQL__URL": "postgresql://kefu:pw@postgres:5432/kefu",
    }
    config = load_kernel(ROOT / "deploy/docker/kefu.toml", environ=environ).config
    assert config.server.host == "0.0.0.0" and config.server.port == 8080
    assert config.server.reload is False and config.server.workers == 2
    assert config.bus.backend == "redis"


def _docker_daemon_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(
    not _docker_daemon_available(),
    reason="no Docker daemon answers here (the docker client is installed, dockerd is not "
    "running), so the image cannot be built in this test run",
)
@pytest.mark.timeout(1800)
def test_docker_build():
    out = subprocess.run(
        ["docker", "build", "--build-arg", "EMBEDDINGS=", "-t", "kefu:test", str(ROOT)],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
