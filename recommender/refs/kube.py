"""Image references in Kubernetes objects, as written or rendered by Helm and Kustomize.

Workloads declare images whether or not they run: a suspended CronJob, a Deployment at zero
replicas, a Job that has not started. Besides the built-in workloads: Argo Rollouts, Knative
Services, OpenShift DeploymentConfigs, Argo Workflows templates and Tekton tasks. Every
container list of the pod template counts (containers, init containers, ephemeral containers)
and so do image volumes
(``volumes[].image.reference``, Kubernetes 1.31). ``List`` documents (``kubectl get -o yaml``)
are read item by item. A kind that is not read but holds an ``image`` key is skipped with a
note, so nobody believes it was checked.
"""

from __future__ import annotations

from yaml.nodes import Node

from .found import Findings
from .nodes import get, line, mentions, scalar, sequence

__all__ = ["POD_SPEC_PATHS", "parse_kube_object", "skipped_note"]

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Rollout": ("spec", "template", "spec"),  # Argo Rollouts, a Deployment look-alike
}
_CONTAINER_LISTS = (
    ("containers", "container"),
    ("initContainers", "init container"),
    ("ephemeralContainers", "ephemeral container"),
)
_IMAGE_KEYS = frozenset({"image", "images"})
# Argo Workflows kinds and where their spec (with ``templates``) sits.
_WORKFLOW_SPECS: dict[str, tuple[str, ...]] = {
    "Workflow": ("spec",),
    "WorkflowTemplate": ("spec",),
    "ClusterWorkflowTemplate": ("spec",),
    "CronWorkflow": ("spec", "workflowSpec"),
}


def _state(kind: str, obj: Node) -> str:
    """Why a declared workload may not be running right now (shown with the reference)."""
    flags = []
    if kind in {"CronJob", "CronWorkflow"} and scalar(get(obj, "spec", "suspend")) in {"true",
                                                                                     "True"}:
        flags.append("suspended")
    replicas = scalar(get(obj, "spec", "replicas"))
    if replicas == "0":
        flags.append("replicas: 0")
    return f" ({', '.join(flags)})" if flags else ""


def _container(container: Node, found: Findings, path: str, detail: str) -> None:
    image_node = get(container, "image")
    image = scalar(image_node)
    if image_node is None or image is None:
        found.note(f"{path}:{line(container)}", "invalid", f"{detail} has no image")
        return
    found.add(image, f"{path}:{line(image_node)}", "kubernetes", detail)


def _pod_spec(spec: Node, found: Findings, path: str, owner: str) -> None:
    for key, label in _CONTAINER_LISTS:
        for container in sequence(get(spec, key)):
            name = scalar(get(container, "name")) or "?"
            _container(container, found, path, f"{owner} {label} {name}")
    for volume in sequence(get(spec, "volumes")):
        ref_node = get(volume, "image", "reference")
        image = scalar(ref_node)
        if ref_node is not None and image is not None:
            name = scalar(get(volume, "name")) or "?"
            found.add(image, f"{path}:{line(ref_node)}", "kubernetes",
                      f"{owner} image volume {name}")


def _workflow(templates: list[Node], found: Findings, path: str, owner: str) -> None:
    """Argo Workflows templates: ``container``, ``script``, init containers, sidecars."""
    for template in templates:
        tname = scalar(get(template, "name")) or "?"
        for key in ("container", "script"):
            node = get(template, key)
            if node is not None:
                _container(node, found, path, f"{owner} template {tname} {key}")
        for key in ("initContainers", "sidecars"):
            for c in sequence(get(template, key)):
                cname = scalar(get(c, "name")) or "?"
                _container(c, found, path, f"{owner} template {tname} {key} {cname}")
        for c in sequence(get(template, "containerSet", "containers")):
            cname = scalar(get(c, "name")) or "?"
            _container(c, found, path, f"{owner} template {tname} container {cname}")


def _task_spec(spec: Node | None, found: Findings, path: str, owner: str) -> None:
    """Tekton steps and sidecars (a Task, or a taskSpec embedded in a run or pipeline)."""
    for key in ("steps", "sidecars"):
        for step in sequence(get(spec, key)):
            sname = scalar(get(step, "name")) or "?"
            _container(step, found, path, f"{owner} {key[:-1]} {sname}")


def _pod_spec_path(api_version: str, kind: str) -> tuple[str, ...] | None:
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    if group == "serving.knative.dev" and kind in {"Service", "Configuration"}:
        return ("spec", "template", "spec")
    if kind == "DeploymentConfig" and group == "apps.openshift.io":
        return ("spec", "template", "spec")
    if kind == "Service" or kind == "Configuration":
        return None  # a core Service has no pods; only Knative's is a workload
    return POD_SPEC_PATHS.get(kind)


def parse_kube_object(obj: Node, found: Findings, path: str, depth: int = 0) -> bool:
    """Read one object (``apiVersion`` + ``kind``). False when its kind is not one we read."""
    kind = scalar(get(obj, "kind")) or ""
    api_version = scalar(get(obj, "apiVersion")) or ""
    name = scalar(get(obj, "metadata", "name")) or "?"
    namespace = scalar(get(obj, "metadata", "namespace"))
    owner = f"{kind}/{name}" + (f" in {namespace}" if namespace else "")
    spec_path = _pod_spec_path(api_version, kind)
    if spec_path is not None:
        spec = get(obj, *spec_path)
        if spec is None:
            found.note(f"{path}:{line(obj)}", "skipped", f"{owner} has no pod template")
            return True
        _pod_spec(spec, found, path, owner + _state(kind, obj))
        return True
    if api_version.startswith("argoproj.io/") and kind in _WORKFLOW_SPECS:
        spec = get(obj, *_WORKFLOW_SPECS[kind])
        _workflow(sequence(get(spec, "templates")), found, path, owner + _state(kind, obj))
        return True
    if api_version.startswith("tekton.dev/") and kind in {"Task", "ClusterTask", "TaskRun",
                                                          "Pipeline", "PipelineRun"}:
        _task_spec(get(obj, "spec"), found, path, owner)
        _task_spec(get(obj, "spec", "taskSpec"), found, path, owner)
        pipeline = get(obj, "spec", "pipelineSpec") or get(obj, "spec")
        for task in sequence(get(pipeline, "tasks")) + sequence(get(pipeline, "finally")):
            tname = scalar(get(task, "name")) or "?"
            _task_spec(get(task, "taskSpec"), found, path, f"{owner} task {tname}")
        return True
    if kind == "List" or (kind.endswith("List") and get(obj, "items") is not None):
        if depth < 5:
            for item in sequence(get(obj, "items")):
                handled = parse_kube_object(item, found, path, depth + 1)
                if not handled:
                    skipped_note(item, found, path)
        return True
    return False


def skipped_note(obj: Node, found: Findings, path: str) -> None:
    """Note a document of a kind we do not read, when it mentions images at all."""
    if not mentions(obj, _IMAGE_KEYS):
        return
    kind = scalar(get(obj, "kind")) or "document without kind"
    name = scalar(get(obj, "metadata", "name"))
    found.note(f"{path}:{line(obj)}", "skipped",
               f"{kind}{'/' + name if name else ''} not read (a kind tagwarden does not know)")

