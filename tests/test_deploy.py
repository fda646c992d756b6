"""The deployment files under ``deploy/``: they parse, carry what they must, and every command,
option, path, setting and name they use exists (no container engine runs here to try them)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from recommender import config as config_mod
from recommender.cli import app
from recommender.registry.local import free_port, registry_binary
from recommender.server import build_app
from recommender.store import Store

from .conftest import missing

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"

# typer vendors click: its UsageError (unknown command or option) is BadParameter's base.
UsageError: type[Exception] = typer.BadParameter.__bases__[0]
ENV_VARS = {s.env for s in config_mod.SETTINGS if s.env} | {"TAGWARDEN_CONFIG"}


def check_cli(args: list[str]) -> None:
    """Parse ``tagwarden <args>`` the way the CLI would, without running it: an unknown
    command or option raises click's UsageError."""
    command: Any = typer.main.get_command(app)
    rest = list(args)
    name = "tagwarden"
    while isinstance(command, typer.core.TyperGroup):
        if not rest:
            raise UsageError(f"{args} names the group {name!r}, not a command")
        name, rest = rest[0], rest[1:]
        sub = command.get_command(typer.Context(command), name)
        if sub is None:
            raise UsageError(f"no command {name!r} in {args}")
        command = sub
    command.make_context(name, rest)  # parses the options; does not run the command


def test_check_cli_refuses_what_does_not_exist() -> None:
    check_cli(["serve", "--host", "0.0.0.0", "--port", "8080"])
    with pytest.raises(UsageError):
        check_cli(["serve", "--listen", "0.0.0.0"])
    with pytest.raises(UsageError):
        check_cli(["servez"])
    with pytest.raises(UsageError):
        check_cli(["audit"])


def server_paths(tmp_path: Path) -> set[str]:
    config = config_mod.load(None, env={})
    store = Store.from_url(f"sqlite:///{tmp_path / 'paths.db'}")
    paths = {getattr(r, "path", "") for r in build_app(config, store).routes}
    return paths | {"/slack/events"}  # mounted by `tagwarden serve` (the notifier's part)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    return [(m.group(1).upper(), m.group(2).strip()) for m in
            re.finditer(r"^([A-Za-z]+)\s+(.*)$", text, re.MULTILINE)]


def test_dockerfile_is_non_root_healthy_and_runs_real_commands() -> None:
    lines = dockerfile()
    by = {k: v for k, v in lines}
    assert by["FROM"].startswith("python:3.11")
    user = by["USER"]
    assert user not in {"0", "root"} and not user.startswith("0:")
    assert "/healthz" in by["HEALTHCHECK"]
    for instruction, value in lines:
        if instruction == "COPY":
            for source in shlex.split(value)[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    entry, cmd = yaml.safe_load(by["ENTRYPOINT"]), yaml.safe_load(by["CMD"])
    assert entry == ["tagwarden"]
    check_cli(cmd)
    assert by["EXPOSE"] == cmd[cmd.index("--port") + 1]
    health = re.search(r"127\.0\.0\.1:(\d+)/healthz", by["HEALTHCHECK"])
    assert health and health.group(1) == by["EXPOSE"]


# --- Compose ------------------------------------------------------------------------------------


def test_compose_wires_registry_postgres_and_tagwarden() -> None:
    [compose] = docs(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) >= {"registry", "postgres", "tagwarden"}
    tw = services["tagwarden"]
    assert (DEPLOY / Path(tw["build"]["context"]) / tw["build"]["dockerfile"]).exists()
    assert set(tw["environment"]) <= ENV_VARS
    assert tw["environment"]["TAGWARDEN_DB"].startswith("postgresql+psycopg://")
    assert "postgres" in tw["depends_on"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
            else:
                assert source in compose["volumes"], volume
    # the registry's config has the collector token substituted at start (it cannot read env)
    registry = services["registry"]
    assert "TAGWARDEN_COLLECTOR_TOKEN" in registry["environment"]
    assert "TAGWARDEN_COLLECTOR_TOKEN" in " ".join(registry["entrypoint"])


def test_registry_config_notifies_the_collector(tmp_path: Path) -> None:
    [config] = docs(DEPLOY / "registry-config.yml")
    assert config["storage"]["delete"]["enabled"] is True
    [endpoint] = config["notifications"]["endpoints"]
    assert endpoint["url"].split(":8080", 1)[1] in server_paths(tmp_path)
    assert endpoint["headers"]["Authorization"][0].startswith("Bearer ")


def test_the_real_registry_accepts_the_registry_config(tmp_path: Path) -> None:
    """Debian's docker-registry parses the file (garbage-collect reads it and walks storage)."""
    binary = registry_binary()
    if binary is None:
        missing("docker-registry")
        return
    [config] = docs(DEPLOY / "registry-config.yml")
    config["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "storage")
    config["http"]["addr"] = f"127.0.0.1:{free_port()}"
    for empty in ("repositories", "blobs"):
        (tmp_path / "storage" / "docker" / "registry" / "v2" / empty).mkdir(parents=True)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run([binary, "garbage-collect", "--dry-run", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_config_example_loads() -> None:
    config = config_mod.load(DEPLOY / "config.example.toml", env={})
    assert config.teams and config.policies
    assert config["server.host"] == "0.0.0.0"


# --- Kubernetes ---------------------------------------------------------------------------------


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in docs(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path.name
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def test_kustomization_lists_every_manifest() -> None:
    [kustomization] = docs(K8S / "kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_kubernetes_objects_reference_each_other() -> None:
    objects = k8s_objects()
    kinds = {kind for kind, _ in objects}
    assert kinds >= {"Deployment", "Service", "ServiceAccount", "ClusterRole",
                     "ClusterRoleBinding", "Secret", "ConfigMap", "CronJob", "Job",
                     "PodDisruptionBudget"}
    deployment = objects[("Deployment", "tagwarden")]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    job = objects[("Job", "tagwarden-migrate")]
    for pod in (deployment["spec"]["template"]["spec"], job["spec"]["template"]["spec"]):
        assert ("ServiceAccount", pod["serviceAccountName"]) in objects
        assert pod["securityContext"]["runAsNonRoot"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            check_cli(container["args"])
            for source in container.get("envFrom", []):
                assert ("Secret", source["secretRef"]["name"]) in objects
            config_env = {e["name"]: e["value"] for e in container.get("env", [])}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            config_path = Path(config_env["TAGWARDEN_CONFIG"])
            volume = volumes[mounts[str(config_path.parent)]]
            configmap = objects[("ConfigMap", volume["configMap"]["name"])]
            assert config_path.name in configmap["data"]
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes
    pod = deployment["spec"]["template"]["spec"]
    [main] = pod["containers"]
    port = main["args"][main["args"].index("--port") + 1]
    assert str(main["ports"][0]["containerPort"]) == port
    service = objects[("Service", "tagwarden")]
    assert service["spec"]["selector"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in main["ports"]}
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v]
    assert all(("PersistentVolumeClaim", c) in objects for c in claims)


def test_probes_and_posts_use_real_paths(tmp_path: Path) -> None:
    objects = k8s_objects()
    paths = server_paths(tmp_path)
    [main] = objects[("Deployment", "tagwarden")]["spec"]["template"]["spec"]["containers"]
    assert main["readinessProbe"]["httpGet"]["path"] in paths
    assert main["livenessProbe"]["httpGet"]["path"] in paths
    cron = objects[("CronJob", "tagwarden-pod-lists")]["spec"]["jobTemplate"]["spec"]
    script = " ".join(cron["template"]["spec"]["containers"][0]["command"])
    posted = re.search(r"https?://[^/\s\"]+(/[^?\s\"]+)", script)
    assert posted and posted.group(1) in paths


def test_rbac_lets_the_pod_lister_list_pods_and_nothing_else() -> None:
    objects = k8s_objects()
    cron = objects[("CronJob", "tagwarden-pod-lists")]["spec"]["jobTemplate"]["spec"]
    account = cron["template"]["spec"]["serviceAccountName"]
    binding = objects[("ClusterRoleBinding", "tagwarden-pod-lister")]
    assert {"kind": "ServiceAccount", "name": account, "namespace": "tagwarden"} in \
        binding["subjects"]
    role = objects[("ClusterRole", binding["roleRef"]["name"])]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "list"]}]


def test_secret_and_configmap_are_what_tagwarden_reads() -> None:
    objects = k8s_objects()
    secret = objects[("Secret", "tagwarden")]
    assert set(secret["stringData"]) <= ENV_VARS
    assert "TAGWARDEN_COLLECTOR_TOKEN" in secret["stringData"]
    text = objects[("ConfigMap", "tagwarden")]["data"]["config.toml"]
    assert "token" not in text and "secret" not in text.replace("Secret", "")
    path = Path(__file__).parent / "_configmap.toml"
    try:
        path.write_text(text, encoding="utf-8")
        config = config_mod.load(path, env={})
    finally:
        path.unlink(missing_ok=True)
    assert config["registry.url"] and config.teams and config.policies


# --- Kubernetes: what a platform team expects ---------------------------------------------------


def server_pod() -> dict[str, Any]:
    spec: dict[str, Any] = k8s_objects()[("Deployment", "tagwarden")]["spec"]["template"]
    return spec


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_liveness_does_not_track_the_database_readiness_does(tmp_path: Path) -> None:
    """A database outage takes the pods out of the Service but restarts none of them."""
    [main] = server_pod()["spec"]["containers"]
    paths = server_paths(tmp_path)
    assert main["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["startupProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert main[probe]["httpGet"]["path"] in paths
        assert main[probe]["httpGet"]["port"] in {p["name"] for p in main["ports"]}
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # a slow migration


def test_termination_waits_for_the_endpoints_then_drains() -> None:
    from recommender.cli import serve as serve_cli

    pod = server_pod()["spec"]
    [main] = pod["containers"]
    command = main["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) >= 5
    drain = re.search(r"timeout_graceful_shutdown=(\d+)", Path(serve_cli.__file__).read_text())
    assert drain
    # preStop counts against the grace period; uvicorn's drain and the collector's last
    # write come after it
    assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + int(drain.group(1)) + 10


def test_replicas_spread_and_a_budget_keeps_one() -> None:
    objects = k8s_objects()
    deployment = objects[("Deployment", "tagwarden")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    spread = {c["topologyKey"]: c for c in
              deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    for constraint in spread.values():
        assert selects(constraint["labelSelector"]["matchLabels"], labels)
        assert constraint["maxSkew"] == 1
    [pdb] = [o for (kind, _), o in objects.items() if kind == "PodDisruptionBudget"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert 1 <= pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_migration_is_one_job_not_an_init_container_per_pod() -> None:
    objects = k8s_objects()
    deployment = objects[("Deployment", "tagwarden")]
    pod = deployment["spec"]["template"]["spec"]
    assert not any(c["args"][:1] == ["migrate"] for c in pod.get("initContainers", []))
    job = objects[("Job", "tagwarden-migrate")]
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == pod["containers"][0]["image"]  # the release it migrates for
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    # the Job's pod is neither behind the Service nor counted as one of the Deployment's
    assert not selects(objects[("Service", "tagwarden")]["spec"]["selector"], job_labels)
    assert not selects(deployment["spec"]["selector"]["matchLabels"], job_labels)
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "kubectl -n tagwarden wait --for=condition=complete job/tagwarden-migrate" in \
        operations


def test_no_shared_volume() -> None:
    """ReadWriteMany stays Pending on the default storage classes of EKS, GKE and AKS."""
    objects = k8s_objects()
    assert not [name for kind, name in objects if kind == "PersistentVolumeClaim"]
    for (kind, _), obj in objects.items():
        if kind in {"Deployment", "Job"}:
            for volume in obj["spec"]["template"]["spec"].get("volumes", []):
                assert "persistentVolumeClaim" not in volume, volume


# A renderer for what kustomization.yaml uses (`kubectl kustomize` is a Go program and not
# installable here): the resources in order, the namespace set on every namespaced object.
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def render_kustomization() -> list[dict[str, Any]]:
    [kustomization] = docs(K8S / "kustomization.yaml")
    unsupported = set(kustomization) - {"apiVersion", "kind", "namespace", "resources"}
    assert not unsupported, f"teach render_kustomization {sorted(unsupported)}"
    rendered = []
    for resource in kustomization["resources"]:
        for doc in docs(K8S / resource):
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
            rendered.append(doc)
    return rendered


# The oldest Kubernetes release the manifests promise to apply on, and the newest schemas the
# validator ships.
OLDEST_KUBERNETES = "1.29.0"


def test_rendered_manifests_pass_the_kubernetes_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate (pip install -e .[dev])")
        return
    rendered = render_kustomization()
    assert len(rendered) == len(k8s_objects())
    for version in (OLDEST_KUBERNETES, kubernetes_validate.latest_version()):
        for obj in rendered:
            where = f"{obj['kind']}/{obj['metadata']['name']} on Kubernetes {version}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{where}: {exc.message} at {list(exc.path)}") from exc
