"""The deploy files, read as an orchestrator would: no registry is reachable here, so the image is never built
in CI and the manifests are never applied; these checks catch what would break or leak on a real cluster (a command
a manifest runs is run through our CLI)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskCliRunner
from helpers import make_user

from idp import audit
from idp.authn.connectors.settings import load_file
from idp.cli import cli
from idp.config import Settings
from idp.ops.serving import GRACEFUL_SECONDS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization() -> dict[str, Any]:
    (found,) = load_all(K8S / "kustomization.yaml")
    return found


def manifests() -> list[dict[str, Any]]:
    return [doc for name in sorted(kustomization()["resources"]) for doc in load_all(K8S / name)]


def one(kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests() if m["kind"] == kind]
    return found


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod a Deployment or a CronJob runs."""
    spec = workload["spec"]
    template: dict[str, Any] = (spec["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else spec)["template"]
    return template


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = pod_template(workload)["spec"]
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def workloads() -> list[dict[str, Any]]:
    return [m for m in manifests() if m["kind"] in ("Deployment", "CronJob")]


def generated(name: str) -> list[str]:
    """The files the kustomization generates the ConfigMap ``name`` from."""
    (generator,) = [g for g in kustomization()["configMapGenerator"] if g["name"] == name]
    return list(generator.get("envs", [])) + list(generator.get("files", []))


def env_settings() -> dict[str, str]:
    """The settings of the generated ConfigMap idp-bridge-env, read as kustomize reads an env file."""
    (env_file,) = generated("idp-bridge-env")
    lines = [line.strip() for line in (K8S / env_file).read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        pending = ""
    return out


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert load_all(path)


def test_kustomization_applies_every_manifest_of_the_expected_kinds() -> None:
    listed = set(kustomization()["resources"])
    inputs = {*generated("idp-bridge-env"), *generated("idp-bridge-files")}
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} - inputs
    kinds = sorted(m["kind"] for m in manifests())
    assert kinds == ["CronJob", "Deployment", "Ingress", "NetworkPolicy", "PodDisruptionBudget", "Service"]
    # One image name for every container, which the kustomization's images entry sets (not three copies).
    images = {c["image"].split(":")[0] for kind in ("Deployment", "CronJob") for c in containers(one(kind))}
    images |= {c["image"].split(":")[0] for c in pod_template(one("Deployment"))["spec"]["initContainers"]}
    assert [i["name"] for i in kustomization()["images"]] == sorted(images) == ["idp-bridge"]


def test_the_settings_and_the_config_file_are_generated_so_that_a_change_rolls_the_pods() -> None:
    """The pods read both at start only: generated ConfigMaps (names with a hash of their content) make a change
    a new ReplicaSet, not old and new settings side by side. Every IDP_* name is a setting of the app, and the
    IDP_CONFIG file is one the app reads without a problem."""
    names = {e["configMapRef"]["name"] for w in workloads() for c in containers(w) for e in c["envFrom"]}
    assert names == {"idp-bridge-env"}
    settings = env_settings()
    assert Settings.from_env({}).stray_variables(settings) == []
    (config_file,) = generated("idp-bridge-files")
    assert settings["IDP_CONFIG"].endswith("/" + config_file)
    directories, problems = load_file(K8S / config_file)
    assert problems == [] and directories == ()


def test_only_the_ingress_controller_and_prometheus_reach_the_pods() -> None:
    """The app trusts one proxy hop's X-Forwarded-For entry: a pod that reached the port directly could write it
    and rotate the address the login throttle counts."""
    policy = one("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_template(one("Deployment"))["metadata"][
        "labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert all("namespaceSelector" in peer for peer in rule["from"]) and len(rule["from"]) == 2
    assert rule["ports"] == [{"port": "http"}]


def test_deployment_runs_several_non_root_replicas_with_probes() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    (app,) = pod["spec"]["containers"]
    port_names = {p["name"] for p in app["ports"]}
    assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert app["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert app[probe]["httpGet"]["port"] in port_names
    # /readyz gives each dependency 2 s and asks the database before the directories.
    assert app["readinessProbe"]["timeoutSeconds"] > 4
    for workload in workloads():
        assert pod_template(workload)["spec"]["securityContext"]["runAsNonRoot"] is True
        for container in containers(workload):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]


def test_a_deleted_pod_serves_until_its_endpoints_are_gone_then_finishes_its_requests() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    command = app["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) >= 5
    # Killed only after the pause and the wait idp serve gives the requests in flight.
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + GRACEFUL_SECONDS


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_the_app_writes_only_to_empty_dirs(kind: str) -> None:
    workload = one(kind)
    volumes = {v["name"]: v for v in pod_template(workload)["spec"]["volumes"]}
    for container in containers(workload):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        for path in (env_settings()["IDP_DATA_DIR"], "/tmp"):
            assert "emptyDir" in volumes[mounts[path]], path
        for m in container["volumeMounts"]:
            assert "emptyDir" in volumes[m["name"]] or m.get("readOnly") is True, m


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_every_replica_gets_the_signing_key_and_secrets_from_secret_references(kind: str) -> None:
    deployment = one(kind)
    volumes = {v["name"]: v for v in pod_template(deployment)["spec"]["volumes"]}
    settings = env_settings()
    for container in containers(deployment):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        # The key, the certificate, the Flask secret key and the database URL (its password) are files in mounted
        # Secrets, never generated, never in the environment (where /proc/<pid>/environ and every process
        # started from the container would show them).
        for name in ("IDP_SIGNING_KEY_FILE", "IDP_SIGNING_CERT_FILE", "IDP_EC_SIGNING_KEY_FILE",
                     "IDP_SECRET_KEY_FILE", "IDP_DATABASE_URL_FILE"):
            volume = volumes[mounts[str(Path(settings[name]).parent)]]
            assert "secret" in volume, name
        assert not [e for e in container.get("env", []) if "valueFrom" in e or e["name"] == "IDP_DATABASE_URL"]
        assert {"configMapRef": {"name": "idp-bridge-env"}} in container["envFrom"]


def test_redis_comes_from_a_secret_where_it_is_used_and_no_setting_is_secret() -> None:
    settings = env_settings()
    # Redis, like the database, only from a mounted Secret (its URL carries the password), and only where it is
    # used: the migration and the audit pruning read no IDP_REDIS_URL_FILE, nor need the Secret.
    deployment = one("Deployment")
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    redis_file = {e["name"]: e for e in app["env"]}["IDP_REDIS_URL_FILE"]["value"]
    volumes = {v["name"]: v for v in pod_template(deployment)["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in app["volumeMounts"]}
    assert volumes[mounts[str(Path(redis_file).parent)]]["secret"]["secretName"] == "idp-redis"
    for other in [*deployment["spec"]["template"]["spec"]["initContainers"], *containers(one("CronJob"))]:
        assert "IDP_REDIS_URL_FILE" not in {e["name"] for e in other.get("env", [])}
    secret_names = {"IDP_SECRET_KEY", "IDP_DATABASE_URL", "IDP_SIGNING_KEY", "IDP_REDIS_URL"}
    assert not secret_names & set(settings)
    assert not [s for s in settings.values() if "postgresql" in s or "redis://" in s or "BEGIN" in s]


def test_no_secret_manifest_holds_literal_data() -> None:
    for path in [*K8S.glob("*.yaml"), DEPLOY / "compose.yaml"]:
        for doc in load_all(path):
            if doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), path
    # Nor the compose file: its database password is a variable the operator sets.
    compose = load_all(DEPLOY / "compose.yaml")[0]
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")


def test_service_ingress_and_budget_select_the_deployment_pods() -> None:
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    service, ingress, budget = one("Service"), one("Ingress"), one("PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] >= 1
    # While a directory is down every pod is unready; a drain must not wait for it to come back.
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    (app,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in app["ports"]}
    backends = [p["backend"]["service"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert backends and all(b["name"] == service["metadata"]["name"] for b in backends)
    assert all(b["port"]["name"] in {p["name"] for p in service["spec"]["ports"]} for b in backends)
    assert ingress["spec"]["tls"]
    # The ingress controller is the one trusted hop in front of the pods.
    assert env_settings()["IDP_TRUSTED_PROXY_HOPS"] == "1"


def test_the_audit_prune_cronjob_prunes_daily_with_the_deployments_image_and_settings(
        runner: FlaskCliRunner, frozen_clock: Any) -> None:
    cron, deployment = one("CronJob"), one("Deployment")
    minute, hour, *every = cron["spec"]["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and every == ["*", "*", "*"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # one pruning at a time
    (job,) = containers(cron)
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    assert job["image"] == app["image"] and job["envFrom"] == app["envFrom"]
    # Not a serving pod: neither the Service nor the disruption budget counts it.
    labels = pod_template(cron)["metadata"].get("labels", {})
    assert not one("Service")["spec"]["selector"].items() <= labels.items()
    assert not one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()

    # Its command, as our CLI takes it: what is older than the retention goes, the rest stays.
    program, *args = job["command"]
    assert program == "idp" and args[:2] == ["audit", "prune"]
    make_user("old")
    frozen_clock.advance(days=401)
    make_user("recent")
    result = runner.invoke(cli, args)
    assert result.exit_code == 0 and result.output == "1 audit event(s) deleted\n", result.output
    assert [e.username for e in audit.events(type="user.create")] == ["recent"]
    assert [e.details["deleted"] for e in audit.events(type="audit.prune")] == [1]


def test_dockerfile_is_multi_stage_non_root_with_presets_and_healthcheck() -> None:
    steps = instructions()
    stages = [args for word, args in steps if word == "FROM"]
    assert len(stages) >= 2
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    final_base = stages[-1].split()[0].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", ""))
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", final_base), final_base
    assert any(word == "COPY" and a.startswith("--from=") for word, a in steps)
    users = [a for word, a in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0].isdigit()  # Kubernetes' runAsNonRoot can only check a numeric user
    env = " ".join(a for word, a in steps if word == "ENV")
    presets = re.search(r"IDP_PRESETS_DIR=(\S+)", env)
    assert presets
    assert any(word == "COPY" and a.split() == ["metadata", str(Path(presets.group(1)).parent)] for word, a in steps)
    (healthcheck,) = [a for word, a in steps if word == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    (cmd,) = [a for word, a in steps if word == "CMD"]
    assert yaml.safe_load(cmd)[:2] == ["idp", "serve"]
    # Nothing secret goes into a layer: no key files copied, no secret settings.
    copied = [a for word, a in steps if word in ("COPY", "ADD")]
    assert not [a for a in copied if re.search(r"\.(key|pem)\b|certs|instance", a)]
    assert not re.search(r"IDP_(SECRET_KEY|DATABASE_URL|SIGNING_KEY_FILE)", env)


def test_docker_build_context_leaves_out_local_state() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "instance", "certs", "**/*.key", "**/*.pem"} <= ignored
    # ...but keeps what the Dockerfile copies.
    for word, args in instructions():
        if word == "COPY" and not args.startswith("--from="):
            for source in shlex.split(args)[:-1]:
                assert source not in ignored, source


def test_compose_runs_the_bridge_on_postgresql_and_a_persistent_redis() -> None:
    compose = load_all(DEPLOY / "compose.yaml")[0]
    services = compose["services"]
    assert {"postgres", "redis", "idp"} <= set(services)
    idp = services["idp"]
    assert idp["environment"]["IDP_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert idp["environment"]["IDP_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
    assert idp["depends_on"]["redis"]["condition"] == "service_healthy"
    # Sessions survive a Redis restart, and no replay-cache entry is ever evicted.
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    assert "--appendfsync always" in redis_cmd  # a crash forgets no single-use mark
    assert "--requirepass ${REDIS_PASSWORD" in redis_cmd
    assert any(v.endswith(":/data") and v.split(":")[0] in compose["volumes"] for v in services["redis"]["volumes"])
    volumes = {v.split(":")[1]: v.split(":")[0] for v in idp["volumes"]}
    assert volumes["/var/lib/idp"] in compose["volumes"]
    assert idp["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # Bound to the loopback, it is reached through a proxy on the host: its X-Forwarded-For entry is the client.
    assert services["idp"]["ports"] == ["127.0.0.1:8000:8000"]
    assert idp["environment"]["IDP_TRUSTED_PROXY_HOPS"] == "${IDP_TRUSTED_PROXY_HOPS:-1}"
    # After a reboot the daemon starts what has a restart policy; depends_on is not waited for again.
    assert {name: services[name].get("restart") for name in ("postgres", "redis", "idp")} == dict.fromkeys(
        ("postgres", "redis", "idp"), "unless-stopped")
