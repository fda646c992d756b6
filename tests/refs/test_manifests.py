"""Kubernetes, Helm-rendered, Kustomize, Compose, Argo CD and ``docker ps`` readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from recommender.errors import PayloadError
from recommender.refs import Findings, parse_docker_ps, parse_yaml
from recommender.refs.compose import read_env_file

FILES = Path(__file__).parent / "files"
CHECKOUT = FILES / "checkout"


def _refs(found: Findings) -> list[tuple[str, str]]:
    return [(r.location, r.image) for r in found.refs]


def read(rel: str, **kwargs: object) -> Findings:
    path = CHECKOUT / rel if (CHECKOUT / rel).exists() else FILES / rel
    return parse_yaml(path.read_text(), path=rel, **kwargs)  # type: ignore[arg-type]


def test_suspended_cronjob_keeps_its_images() -> None:
    found = read("deploy/base/cron.yaml")
    assert _refs(found) == [
        ("deploy/base/cron.yaml:19", "registry.example.com/team/report:1.4.2"),
        ("deploy/base/cron.yaml:16", "registry.example.com/ops/wait-for:2.1"),
    ]
    assert found.refs[0].detail == "CronJob/nightly-report in reports (suspended) container report"
    assert "init container wait-for-db" in found.refs[1].detail
    assert found.notes == []


def test_deployment_at_zero_replicas_with_every_container_kind() -> None:
    found = read("deploy/base/app.yaml")
    assert _refs(found) == [
        ("deploy/base/app.yaml:25", "registry.example.com/team/api:2.0.0-rc.1"),
        ("deploy/base/app.yaml:27", "docker.io/envoyproxy/envoy:v1.29.1"),
        ("deploy/base/app.yaml:30", "busybox:1.36"),
        ("deploy/base/app.yaml:34", "registry.example.com/ml/model-weights@sha256:"
         "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
    ]
    assert all("(replicas: 0)" in r.detail for r in found.refs)
    assert "ephemeral container debug" in found.refs[2].detail
    assert "image volume models" in found.refs[3].detail
    # The Service and ConfigMap hold no image: passed silently. The Prober does: noted.
    [note] = found.notes
    assert (note.kind, note.location) == ("skipped", "deploy/base/app.yaml:36")
    assert "Prober/blackbox" in note.message


def test_helm_rendered_chart() -> None:
    found = read("charts/rendered/web.yaml")
    assert _refs(found) == [
        ("charts/rendered/web.yaml:31", "registry.example.com/team/redis:7.2.4"),
        ("charts/rendered/web.yaml:65", "registry.example.com/team/web:3.1.0@sha256:"
         "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"),
    ]
    [note] = found.notes
    assert note.kind == "unresolved" and note.location == "charts/rendered/web.yaml:50"
    assert "{{ .Values.agent.image.repository }}" in note.message


def test_unrendered_helm_template_is_skipped_not_guessed() -> None:
    found = read("charts/web/templates/deployment.yaml")
    assert found.refs == []
    [note] = found.notes
    assert note.kind == "skipped" and "unrendered template" in note.message


def test_kustomization_images() -> None:
    found = read("deploy/overlays/prod/kustomization.yaml")
    assert _refs(found) == [
        ("deploy/overlays/prod/kustomization.yaml:6", "registry.example.com/team/api:1.9.3"),
        ("deploy/overlays/prod/kustomization.yaml:8", "registry.example.com/mirror/busybox@sha256:"
         "7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c"),
    ]


def test_compose_with_env_file_and_defaults() -> None:
    env = read_env_file((CHECKOUT / ".env").read_text())
    assert env == {"API_TAG": "2.0.0", "COMPOSE_PROJECT_NAME": "shop"}
    found = read("docker-compose.yml", env=env)
    assert _refs(found) == [
        ("docker-compose.yml:4", "postgres:16-alpine"),
        ("docker-compose.yml:9", "registry.example.com/team/api:2.0.0"),
        ("docker-compose.yml:14", "registry.example.com/team/redis:7.2.4"),
    ]
    assert [n.kind for n in found.notes] == ["unresolved"]
    assert "PROXY_IMAGE" in found.notes[0].message


def test_compose_without_env_file_reports_the_missing_variable() -> None:
    found = read("docker-compose.yml")
    assert ("docker-compose.yml:9" in [n.location for n in found.notes_of("unresolved")])


def test_argo_application_status_and_kustomize_overrides() -> None:
    found = read("argo-app.yaml")
    assert _refs(found) == [
        ("argo-app.yaml:25", "registry.example.com/team/api:1.9.3"),
        ("argo-app.yaml:26", "registry.example.com/team/report:1.4.2"),
        ("argo-app.yaml:27", "docker.io/envoyproxy/envoy:v1.29.1"),
        ("argo-app.yaml:14", "registry.example.com/team/api:1.9.3"),
    ]
    assert {r.kind for r in found.refs} == {"argo"}


def test_list_documents_as_kubectl_prints_them() -> None:
    text = """\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: one, namespace: a}
    spec:
      containers:
        - {name: c, image: "reg.local:5000/team/one:1"}
  - apiVersion: apps/v1
    kind: ReplicaSet
    metadata: {name: two}
    spec:
      template:
        spec:
          containers:
            - name: c
              image: reg.local:5000/team/two:2
  - apiVersion: example.com/v1
    kind: Widget
    metadata: {name: w}
    spec: {image: reg.local:5000/team/widget:1}
"""
    found = parse_yaml(text, path="list.yaml")
    assert _refs(found) == [("list.yaml:9", "reg.local:5000/team/one:1"),
                            ("list.yaml:18", "reg.local:5000/team/two:2")]
    [note] = found.notes
    assert note.kind == "skipped" and "Widget/w" in note.message


def test_json_manifest_and_containers_without_image() -> None:
    text = ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},\n'
            ' "spec": {"containers": [{"name": "a", "image": "nginx:1.25"},\n'
            '                         {"name": "b"}]}}\n')
    found = parse_yaml(text, path="pod.json")
    assert _refs(found) == [("pod.json:2", "nginx:1.25")]
    assert [n.kind for n in found.notes] == ["invalid"]


@pytest.mark.parametrize(
    ("image", "kind"),
    [("${IMAGE}", "unresolved"), ("{{ .Values.image }}", "unresolved"),
     ("registry.example.com/Team/App:1", "invalid"), ("", "invalid")],
)
def test_bad_images_become_notes(image: str, kind: str) -> None:
    text = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
            f"    - name: c\n      image: \"{image}\"\n")
    found = parse_yaml(text, path="p.yaml")
    assert found.refs == []
    assert [n.kind for n in found.notes] == [kind]


def test_documents_of_other_tools_are_passed_over() -> None:
    text = "name: ci\non: push\njobs:\n  build:\n    container:\n      image: node:20\n"
    found = parse_yaml(text, path=".github/workflows/ci.yaml")
    assert found.refs == [] and found.notes == []


def test_docker_ps_lines() -> None:
    found = parse_docker_ps((FILES / "docker-ps.jsonl").read_text(), path="host1.jsonl")
    assert [(r.location, str(r.ref), r.detail) for r in found.refs] == [
        ("host1.jsonl:1", "registry.example.com/team/legacy-billing:0.9.7",
         "container billing (running)"),
        ("host1.jsonl:2", "registry.example.com/ops/cron@sha256:"
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
         "container cron (exited)"),
        ("host1.jsonl:3", "docker.io/library/nginx", "container edge (running)"),
    ]
    [note] = found.notes
    assert note.kind == "unresolved" and "4e1b0f2c3d5a" in note.message


@pytest.mark.parametrize(
    ("text", "words"),
    [("not json\n", "host.jsonl:1: not JSON"),
     ('{"Image": "nginx"}\n[1, 2]\n', "host.jsonl:2: expected one JSON object"),
     ('{"Names": "x"}\n', 'no "Image" field')],
)
def test_docker_ps_is_strict(text: str, words: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_docker_ps(text, path="host.jsonl")
    assert words in info.value.message


def test_compose_merge_keys_carry_the_image() -> None:
    text = """\
x-app: &app
  image: registry.example.com/team/app:1.0
  restart: always
services:
  web:
    <<: *app
    command: web
  worker:
    <<: [*app]
    image: registry.example.com/team/worker:2
"""
    found = parse_yaml(text, path="compose.yaml")
    assert [(r.location, r.image, r.detail) for r in found.refs] == [
        ("compose.yaml:2", "registry.example.com/team/app:1.0", "service web"),
        ("compose.yaml:10", "registry.example.com/team/worker:2", "service worker"),
    ]


WORKLOADS = [
    pytest.param("""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    spec:
      containers:
        - image: reg.local:5000/team/hello:1
""", [(8, "reg.local:5000/team/hello:1")], id="knative-service"),
    pytest.param("""\
apiVersion: v1
kind: Service
metadata: {name: plain}
spec:
  template:
    spec:
      containers: [{image: reg.local:5000/not/a-workload:1}]
""", [], id="core-service-is-no-workload"),
    pytest.param("""\
apiVersion: apps.openshift.io/v1
kind: DeploymentConfig
metadata: {name: legacy}
spec:
  replicas: 0
  template:
    spec:
      containers:
        - name: app
          image: reg.local:5000/team/legacy:4
""", [(10, "reg.local:5000/team/legacy:4")], id="openshift-deploymentconfig"),
    pytest.param("""\
apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata: {name: quarterly}
spec:
  schedule: "0 0 1 */3 *"
  suspend: true
  workflowSpec:
    entrypoint: main
    templates:
      - name: main
        container:
          image: reg.local:5000/team/report:2
        sidecars:
          - name: db
            image: postgres:16
      - name: sum
        script:
          image: python:3.12
          source: print(1)
""", [(12, "reg.local:5000/team/report:2"), (15, "postgres:16"), (18, "python:3.12")],
        id="argo-cronworkflow"),
    pytest.param("""\
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: build}
spec:
  tasks:
    - name: test
      taskSpec:
        steps:
          - name: unit
            image: reg.local:5000/ci/python-test:3
""", [(10, "reg.local:5000/ci/python-test:3")], id="tekton-pipeline-embedded-task"),
    pytest.param("""\
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: kaniko}
spec:
  steps:
    - name: build
      image: gcr.io/kaniko-project/executor:v1.23.0
  sidecars:
    - name: registry
      image: registry:2
""", [(7, "gcr.io/kaniko-project/executor:v1.23.0"), (10, "registry:2")], id="tekton-task"),
]


@pytest.mark.parametrize(("text", "expected"), WORKLOADS)
def test_other_workload_kinds(text: str, expected: list[tuple[int, str]]) -> None:
    found = parse_yaml(text, path="w.yaml")
    assert [(int(r.location.rsplit(":", 1)[1]), r.image) for r in found.refs] == expected


def test_suspended_cron_workflow_says_so() -> None:
    text = WORKLOADS[3].values[0]
    found = parse_yaml(text, path="w.yaml")  # type: ignore[arg-type]
    assert found.refs[0].detail == "CronWorkflow/quarterly (suspended) template main container"


def test_json_indented_with_tabs() -> None:
    text = ('{\n\t"apiVersion": "argoproj.io/v1alpha1",\n\t"kind": "Application",\n'
            '\t"metadata": {"name": "shop"},\n\t"status": {\n\t\t"summary": {\n'
            '\t\t\t"images": ["reg.local:5000/team/api:1.9.3"]\n\t\t}\n\t}\n}\n')
    found = parse_yaml(text, path="app.json")
    assert [(r.location, r.image) for r in found.refs] == [
        ("app.json:7", "reg.local:5000/team/api:1.9.3")]


def test_podman_ps_lines_name_containers_in_a_list() -> None:
    text = ('{"Id": "0f3e", "Image": "quay.io/org/app:3", "Names": ["app-1"], '
            '"State": "running"}\n{"ID": "77aa66bb55cc", "Image": "busybox:1.36"}\n')
    found = parse_docker_ps(text, path="podman.jsonl")
    assert [r.detail for r in found.refs] == ["container app-1 (running)",
                                              "container 77aa66bb55cc"]
