"""Property: whatever JSON arrives, a parser returns events or raises PayloadError, nothing else.

Anything else would be a 500 from the collector or a traceback from the CLI.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.collector.deploy import parse_deploys
from recommender.collector.distribution import parse_envelope
from recommender.collector.harbor import parse_webhook
from recommender.collector.k8s import parse_pod_list
from recommender.errors import PayloadError
from recommender.usage import Classifier

from .test_distribution import DOCS_PULL
from .test_harbor import CLOUD_SCAN_PULL, DEFAULT_PULL
from .test_k8s import POD_LIST

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(["sha256:" + "a" * 64, "2026-03-01T10:00:00Z",
                                              "push", "pull", "delete", "List", "nginx:1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=20,
)
CLASSIFIER = Classifier()
AT = datetime(2026, 3, 1, tzinfo=UTC)


def mutate(doc: Any, path: list[int], value: Any) -> Any:
    """Replace one node of ``doc`` (chosen by ``path``) with ``value``."""
    doc = copy.deepcopy(doc)
    node = doc
    for step in path:
        if isinstance(node, dict) and node:
            key = sorted(node)[step % len(node)]
            if not isinstance(node[key], dict | list) or step % 3 == 0:
                node[key] = value
                return doc
            node = node[key]
        elif isinstance(node, list) and node:
            i = step % len(node)
            if not isinstance(node[i], dict | list) or step % 3 == 0:
                node[i] = value
                return doc
            node = node[i]
    return doc


def parses_or_refuses(fn: Any, doc: Any) -> None:
    try:
        fn(doc)
    except PayloadError as exc:
        assert exc.message


PARSERS = [
    (lambda d: parse_envelope(d, CLASSIFIER), DOCS_PULL),
    (lambda d: parse_webhook(d, CLASSIFIER), DEFAULT_PULL),
    (lambda d: parse_webhook(d, CLASSIFIER), CLOUD_SCAN_PULL),
    (parse_deploys, {"timestamp": "2026-03-01T12:00:00Z", "image": "r.io/a:1"}),
    (lambda d: parse_pod_list(d, source="s", taken_at=AT), POD_LIST),
]


@settings(max_examples=300, deadline=None)
@given(doc=JSON)
def test_arbitrary_json(doc: Any) -> None:
    for fn, _ in PARSERS:
        parses_or_refuses(fn, doc)


@settings(max_examples=400, deadline=None)
@given(which=st.integers(0, len(PARSERS) - 1), path=st.lists(st.integers(0, 50), max_size=8),
       value=JSON)
def test_real_payloads_with_one_part_replaced(which: int, path: list[int], value: Any) -> None:
    fn, sample = PARSERS[which]
    parses_or_refuses(fn, mutate(sample, path, value))
