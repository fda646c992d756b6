"""Who talks to the registry: real clients' user agents, actors and addresses, and the clusters.

User agents are the strings these clients really send (docker's long engine string, containerd
and cri-o for kubelet pulls, buildkit and kaniko in CI, podman through containers/image, cosign,
Trivy and Clair scanners, regclient and crane janitors, skopeo mirroring).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AGENTS", "CLUSTERS", "HUMANS", "Client", "ClientTable", "Cluster"]

AGENTS = {
    "docker": ("docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0-17-amd64 os/linux "
               "arch/amd64 UpstreamClient(Docker-Client/24.0.7 \\(linux\\))"),
    "docker-desktop": ("docker/25.0.3 go/go1.21.6 git-commit/f417435 kernel/6.6.16-linuxkit "
                       "os/linux arch/arm64 UpstreamClient(Docker-Client/25.0.3 \\(darwin\\))"),
    "containerd": "containerd/v1.7.13",
    "cri-o": "cri-o/1.29.1 go/go1.21.7 os/linux arch/amd64",
    "podman": "containers/5.29.2 (github.com/containers/image)",
    "buildkit": "buildkit/v0.12.5",
    "kaniko": "kaniko/v1.20.0",
    "cosign": "cosign/v2.2.3 (linux; amd64) go-containerregistry/v0.19.0",
    "trivy": "trivy/v0.49.1 go-containerregistry/v0.19.0",
    "clair": "clair/v4.7.2",
    "regclient": "regclient/regbot (v0.5.7)",
    "crane": "crane/v0.19.0 go-containerregistry/v0.19.0",
    "skopeo": "skopeo/1.14.2",
    "curl": "curl/8.5.0",
}

HUMANS = ("alice", "bob", "chen", "dana", "emeka", "farah", "goran", "hiro", "ines", "jonas")


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    environment: str
    runtime: str  # containerd | cri-o
    nodes: int
    subnet: str  # first two octets of the node addresses


CLUSTERS = {
    "stg-1": Cluster("stg-1", "staging", "containerd", 6, "10.40"),
    "prod-eu-1": Cluster("prod-eu-1", "production", "containerd", 14, "10.60"),
    "prod-us-1": Cluster("prod-us-1", "production", "cri-o", 10, "10.70"),
}
PRODUCTION = ("prod-eu-1", "prod-us-1")


@dataclass(frozen=True, slots=True)
class Client:
    kind: str  # a key of AGENTS
    actor: str | None
    addr: str

    @property
    def user_agent(self) -> str:
        return AGENTS[self.kind]


class ClientTable:
    """Interned clients: events store a small integer, the writers look the client up."""

    def __init__(self) -> None:
        self.items: list[Client] = []
        self._ids: dict[Client, int] = {}

    def get(self, kind: str, actor: str | None, addr: str) -> int:
        c = Client(kind, actor, addr)
        cid = self._ids.get(c)
        if cid is None:
            cid = self._ids[c] = len(self.items)
            self.items.append(c)
        return cid

    def node(self, cluster: str, i: int) -> int:
        """The kubelet's container runtime on node ``i`` (pulls with the cluster's secret)."""
        cl = CLUSTERS[cluster]
        return self.get(cl.runtime, f"k8s-pull-{cluster}", f"{cl.subnet}.{i // 250}.{i % 250 + 4}")

    def ci(self, i: int, kind: str = "buildkit") -> int:
        return self.get(kind, "gitlab-ci-token", f"10.30.0.{i % 24 + 10}")

    def human(self, i: int, kind: str = "docker-desktop") -> int:
        return self.get(kind, HUMANS[i % len(HUMANS)], f"10.90.{i % 7}.{i % 50 + 20}")

    def cosign_ci(self) -> int:
        return self.get("cosign", "gitlab-ci-token", "10.30.0.9")

    def policy_controller(self, cluster: str) -> int:
        cl = CLUSTERS[cluster]
        return self.get("cosign", f"k8s-pull-{cluster}", f"{cl.subnet}.0.2")

    def scanner(self, kind: str) -> int:
        return self.get(kind, f"robot-{kind}", "10.50.0.7" if kind == "trivy" else "10.50.0.8")

    def janitor(self, kind: str) -> int:
        return self.get(kind, "svc-janitor", "10.50.1.3")

    def mirror(self) -> int:
        return self.get("skopeo", "svc-mirror", "10.50.2.4")
