"""Declared references benchmark: read a generated 10,000-file checkout (target: under 10 s).

Run: ``.venv/bin/python bench/refs.py [--files 10000] [--seed 1] [--keep DIR]``.

The checkout looks like a monorepo of ``--files / 25`` services, each with source code, docs,
tests, a multi-stage Dockerfile with build arguments, Kubernetes manifests (Deployment,
Service, suspended CronJob, a Helm-rendered StatefulSet, a kustomization), a Compose file and a
JSON config; one in ten services also has an unrendered Helm template. ``node_modules`` and
``.git`` trees are added on top (they must not be entered, and are not counted in ``--files``).

Measured, each from a cold Python function call (files are in the page cache after generation,
as on a CI runner that has just cloned):

1. walk: find and parse every declaring file (``recommender.refs.walk``);
2. store: replace the source's set in a fresh SQLite store, then again unchanged (what a
   daily re-ingest of an unchanged checkout costs).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.reference import registry_hosts  # noqa: E402
from recommender.refs import record, walk  # noqa: E402
from recommender.store import open_store  # noqa: E402

FILES_PER_SERVICE = 25
REG = "registry.example.com"

DOCKERFILE = """\
# syntax=docker/dockerfile:1.7
ARG PY=3.12
ARG BASE={reg}/base/python
FROM ${{BASE}}:${{PY}}-slim AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache \\
    pip install --no-cache-dir -r requirements.txt
FROM build AS test
RUN pytest
FROM gcr.io/distroless/python3-debian12:nonroot
COPY --from=build /src /app
COPY --from={reg}/tools/grpc-health:{v} /bin/grpc_health_probe /bin/
"""

K8S = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {svc}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {svc}}}
  template:
    metadata:
      labels: {{app: {svc}}}
    spec:
      initContainers:
        - name: migrate
          image: {reg}/{ns}/{svc}-migrations:{v}
      containers:
        - name: app
          image: {reg}/{ns}/{svc}:{v}
        - name: proxy
          image: docker.io/envoyproxy/envoy:v1.29.1
---
apiVersion: v1
kind: Service
metadata:
  name: {svc}
spec:
  ports: [{{port: 80}}]
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {svc}-cleanup
spec:
  schedule: "0 3 * * *"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: cleanup
              image: {reg}/{ns}/{svc}-jobs@sha256:{digest}
"""

HELM = """\
---
# Source: {svc}/templates/statefulset.yaml
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {svc}-cache
  labels:
    helm.sh/chart: {svc}-0.1.0
spec:
  serviceName: {svc}-cache
  template:
    spec:
      containers:
        - name: redis
          image: "{reg}/mirror/redis:7.2.{minor}"
"""

TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ include "chart.fullname" . }}}}
spec:
  {{{{- if not .Values.autoscaling.enabled }}}}
  replicas: {{{{ .Values.replicaCount }}}}
  {{{{- end }}}}
  template:
    spec:
      containers:
        - name: app
          image: "{{{{ .Values.image.repository }}}}:{{{{ .Values.image.tag }}}}"
"""

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../base]
images:
  - name: {reg}/{ns}/{svc}
    newTag: {v}
"""

COMPOSE = """\
services:
  app:
    build: .
    image: ${{REGISTRY:-{reg}}}/{ns}/{svc}:${{TAG:-{v}}}
  db:
    image: postgres:16-alpine
"""

PY = "import os\n\n\ndef main() -> None:\n    print(os.environ.get('X', 'FROM here'))\n" * 20
MD = "# Service\n\nBuilt FROM the base image; see Dockerfile.\n" * 10


def generate(root: Path, files: int, seed: int) -> int:
    """Write the checkout; return the number of files outside skipped directories."""
    rng = random.Random(seed)
    services = max(1, files // FILES_PER_SERVICE)
    written = 0
    for i in range(services):
        ns = f"team{i % 17}"
        svc = f"svc{i:04d}"
        d = root / "services" / svc
        v = f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}"
        fmt = {"reg": REG, "ns": ns, "svc": svc, "v": v, "minor": rng.randint(0, 9),
               "replicas": rng.choice([0, 1, 3]), "digest": f"{rng.getrandbits(256):064x}"}
        layout = {
            "Dockerfile": DOCKERFILE.format(**fmt),
            "deploy/base/k8s.yaml": K8S.format(**fmt),
            "deploy/rendered/chart.yaml": HELM.format(**fmt),
            "deploy/overlays/prod/kustomization.yaml": KUSTOMIZATION.format(**fmt),
            "docker-compose.yml": COMPOSE.format(**fmt),
            "config/settings.json": f'{{"name": "{svc}", "replicas": 3}}\n',
            "README.md": MD,
            "requirements.txt": "httpx==0.27.0\n",
            ".github/workflows/ci.yaml": "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n",
        }
        if i % 10 == 0:
            layout["chart/templates/deployment.yaml"] = TEMPLATE.format(**fmt)
        n_src = FILES_PER_SERVICE - len(layout)
        for j in range(n_src):
            layout[f"src/{svc}/mod{j:02d}.py" if j % 3 else f"tests/test_{j:02d}.py"] = PY
        for rel, text in layout.items():
            path = d / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written += 1
    # Trees a walk must not enter, on top of the counted files.
    for i in range(200):
        p = root / "node_modules" / f"pkg{i}" / "Dockerfile"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("FROM node:20\n")
        (root / ".git" / "objects" / f"{i:02x}").mkdir(parents=True, exist_ok=True)
        (root / ".git" / "objects" / f"{i:02x}" / "blob").write_bytes(os.urandom(512))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="Generate into this directory and keep it.")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-refs-"))
    root = args.keep or tmp / "checkout"
    try:
        t = time.perf_counter()
        written = generate(root, args.files, args.seed)
        gen = time.perf_counter() - t

        t = time.perf_counter()
        found = walk([root])
        walked = time.perf_counter() - t

        store = open_store(f"sqlite:///{tmp / 'store.db'}")
        at = datetime(2026, 6, 1, tzinfo=UTC)
        hosts = registry_hosts(f"https://{REG}")
        t = time.perf_counter()
        [first] = record(store, {"monorepo": found.refs}, at=at, hosts=hosts)
        stored = time.perf_counter() - t
        t = time.perf_counter()
        [again] = record(store, {"monorepo": found.refs}, at=at + timedelta(days=1), hosts=hosts)
        restored = time.perf_counter() - t
        store.dispose()

        files = ", ".join(f"{k} {v}" for k, v in sorted(found.files.items()))
        print(f"python {platform.python_version()}, {os.cpu_count()} cores")
        print(f"generated {written} files (+400 in node_modules/.git) in {gen:.1f} s")
        print(f"walk: {walked:.2f} s for {written} files -> {len(found.refs)} references, "
              f"{len(found.notes_of('unresolved'))} unresolved, "
              f"{len(found.notes_of('skipped'))} skipped ({files})")
        print(f"store (SQLite): first ingest {stored:.2f} s ({first.added} rows), "
              f"unchanged re-ingest {restored:.2f} s ({again.unchanged} unchanged)")
        print(f"target: walk under 10 s -> {'met' if walked < 10 else 'MISSED'}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # --keep puts the checkout elsewhere


if __name__ == "__main__":
    sys.exit(main())
