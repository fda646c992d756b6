"""Image references in Kubernetes objects, as written or rendered by Helm and Kustomize.

Workloads declare images whether or not they run: a suspended CronJob, a Deployment at zero
replicas, a Job that has not started. Every container list of the pod template counts
(containers, init containers, ephemeral containers) and so do image volumes
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


def _state(kind: str, obj: Node) -> str:
    """Why a declared workload may not be running right now (shown with the reference)."""
    flags = []
    if kind == "CronJob" and scalar(get(obj, "spec", "suspend")) in {"true", "True"}:
        flags.append("suspended")
    replicas = scalar(get(obj, "spec", "replicas"))
    if replicas == "0":
        flags.append("replicas: 0")
    return f" ({', '.join(flags)})" if flags else ""


def _pod_spec(spec: Node, found: Findings, path: str, owner: str) -> None:
    for key, label in _CONTAINER_LISTS:
        for container in sequence(get(spec, key)):
            image_node = get(container, "image")
            name = scalar(get(container, "name")) or "?"
            detail = f"{owner} {label} {name}"
            image = scalar(image_node)
            if image_node is None or image is None:
                found.note(f"{path}:{line(container)}", "invalid", f"{detail} has no image")
                continue
            found.add(image, f"{path}:{line(image_node)}", "kubernetes", detail)
    for volume in sequence(get(spec, "volumes")):
        ref_node = get(volume, "image", "reference")
        image = scalar(ref_node)
        if ref_node is not None and image is not None:
            name = scalar(get(volume, "name")) or "?"
            found.add(image, f"{path}:{line(ref_node)}", "kubernetes",
                      f"{owner} image volume {name}")


def parse_kube_object(obj: Node, found: Findings, path: str, depth: int = 0) -> bool:
    """Read one object (``apiVersion`` + ``kind``). False when its kind is not one we read."""
    kind = scalar(get(obj, "kind")) or ""
    name = scalar(get(obj, "metadata", "name")) or "?"
    namespace = scalar(get(obj, "metadata", "namespace"))
    owner = f"{kind}/{name}" + (f" in {namespace}" if namespace else "")
    if kind in POD_SPEC_PATHS:
        spec = get(obj, *POD_SPEC_PATHS[kind])
        if spec is None:
            found.note(f"{path}:{line(obj)}", "skipped", f"{owner} has no pod template")
            return True
        _pod_spec(spec, found, path, owner + _state(kind, obj))
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

