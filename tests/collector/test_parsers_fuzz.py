"""Property: whatever JSON arrives, a parser returns events or raises PayloadError, nothing else.

Anything else would be a 500 from the collector or a traceback from the CLI.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.collector.bulk import sqlite_time
from recommender.collector.cloudtrail import parse_cloudtrail
from recommender.collector.deploy import parse_deploys
from recommender.collector.distribution import parse_envelope, parse_envelope_line, parse_event
from recommender.collector.harbor import parse_webhook
from recommender.collector.k8s import parse_pod_list
from recommender.errors import PayloadError
from recommender.usage import Classifier

from .test_cloudtrail import IMAGE_PUSHED, POLICY_EXPIRY, PULL_BY_TAG, put, via_eventbridge
from .test_distribution import BLOB_PUSH, DOCS_PULL, TAG_DELETE
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


def line_of(doc: Any) -> bytes:
    """``doc`` as a line of a file (the standard library writes any integer, and inf/nan as
    the invalid JSON some senders do write)."""
    return json.dumps(doc).encode()


PARSERS = [
    (lambda d: parse_envelope(d, CLASSIFIER), DOCS_PULL),
    (lambda d: parse_envelope_line(line_of(d), CLASSIFIER), DOCS_PULL),
    (lambda d: parse_webhook(d, CLASSIFIER), DEFAULT_PULL),
    (lambda d: parse_webhook(d, CLASSIFIER), CLOUD_SCAN_PULL),
    (parse_deploys, {"timestamp": "2026-03-01T12:00:00Z", "image": "r.io/a:1"}),
    (lambda d: parse_pod_list(d, source="s", taken_at=AT), POD_LIST),
    (lambda d: parse_cloudtrail(d, CLASSIFIER),
     {"Records": [PULL_BY_TAG, POLICY_EXPIRY,
                  put("p-1", "2026-03-01T09:00:00Z", tag="v1", digest="sha256:" + "a" * 64)]}),
    (lambda d: parse_cloudtrail(d, CLASSIFIER), [via_eventbridge(PULL_BY_TAG), IMAGE_PUSHED]),
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


# Events of the shape the Distribution parser's fast path takes (nanosecond UTC timestamps):
# every field present, then one part replaced, often by a value at a limit.
USUAL = {"events": [
    {"id": "e1", "timestamp": "2026-03-01T10:00:00.123456789Z", "action": "pull",
     "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + "a" * 64, "size": 708, "length": 708,
                "repository": "shop/web", "tag": "v1",
                "url": "http://r:5000/v2/shop/web/manifests/v1"},
     "request": {"id": "r", "addr": "10.0.0.1:1", "host": "r:5000", "method": "HEAD",
                 "useragent": "containerd/1.7.2"},
     "actor": {"name": "robot$shop+trivy-1"}, "source": {"addr": "r:5000"}},
    {"id": "e2", "timestamp": "2026-03-01T10:00:01.000000001Z", "action": "pull",
     "target": {"digest": "sha256:" + "c" * 64, "repository": "shop/web",
                "url": "http://r:5000/v2/shop/web/blobs/sha256:" + "c" * 64},
     "request": {"useragent": "trivy/0.50.1"}, "source": {"addr": "r:5000"}},
    {**BLOB_PUSH, "timestamp": "2026-03-01T10:00:02.999999999Z"},
    {**TAG_DELETE, "timestamp": "2026-03-02T08:00:00.000000000Z"},
]}
EDGE_VALUES = [
    "", " ", "x" * 8, "x" * 9, "x" * 64, "x" * 65, "x" * 128, "x" * 129, "x" * 255, "x" * 256,
    "x" * 512, "x" * 513, "sha256:" + "A" * 64, "sha256:" + "a" * 63, "2026-03-01T10:00:00Z",
    "2026-13-01T10:00:00.123456789Z", "2026-03-01T10:00:00,123456789Z", "mount", "Pull",
    0, -1, 2**63 - 1, 2**63, True, 1.5, None, {}, [],
]
EDGES = st.sampled_from(EDGE_VALUES)


def outcome(fn: Any, doc: Any) -> Any:
    try:
        events = fn(doc)
    except PayloadError as exc:
        return ("refused", exc.as_dict())
    for e in events:  # the stamp a parser keeps is the time as SQLite stores it, or none
        assert e.stamp is None or e.stamp == sqlite_time(e.time), (e.stamp, e.time)
    return events


def by_line(doc: Any) -> tuple[Any, Any]:
    """(the line parser's outcome, what parse_envelope makes of orjson's decoding of the
    line): a file's line must give the same events or the same error either way."""
    line = line_of(doc)
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        expected: Any = ("refused", PayloadError(f"invalid JSON: {exc}").as_dict())
    else:
        expected = outcome(lambda d: parse_envelope(d, CLASSIFIER), decoded)
    return outcome(lambda d: parse_envelope_line(line_of(d), CLASSIFIER), doc), expected


def checked(doc: Any) -> list[Any]:
    """Every event through the fully checked parser (what parse_envelope did before its fast
    path)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        return parse_envelope(doc, CLASSIFIER)  # no event to parse: the same code either way
    return [parse_event(item, CLASSIFIER, f"events[{i}]") for i, item in enumerate(doc["events"])]


def test_the_usual_events_take_the_fast_path_and_agree() -> None:
    from recommender.collector.distribution import _parse_usual

    assert all(_parse_usual(item, CLASSIFIER) is not None for item in USUAL["events"])
    assert outcome(lambda d: parse_envelope(d, CLASSIFIER), USUAL) == outcome(checked, USUAL)
    got, expected = by_line(USUAL)
    assert got == expected == outcome(checked, USUAL)


def test_odd_timestamps_agree_and_keep_a_true_stamp() -> None:
    for stamp in ("2026-03-01 10:00:00.123456789Z", "2026-03-01t10:00:00.123456789Z",
                  "2026-W09-7T10:00:00.123456789Z", "2026-03-01T10:00:00.999999999Z",
                  "2026-02-29T10:00:00.123456789Z", "2024-02-29T23:59:59.000000000Z",
                  "2026-03-01T10:00:60.123456789Z", "+026-03-01T10:00:00.123456789Z"):
        doc = replaced(USUAL, [(0, ("timestamp",), stamp)])
        expected = outcome(checked, doc)
        assert outcome(lambda d: parse_envelope(d, CLASSIFIER), doc) == expected, stamp
        got, by_orjson = by_line(doc)
        assert got == by_orjson == expected, stamp


def test_the_line_parser_decodes_the_usual_events_itself(monkeypatch: Any) -> None:
    import recommender.collector.distribution as distribution

    def no_dicts(*_args: Any) -> Any:
        raise AssertionError("the usual line went the dict way")

    monkeypatch.setattr(distribution, "parse_envelope", no_dicts)
    assert len(parse_envelope_line(line_of(USUAL), CLASSIFIER)) == len(USUAL["events"])


FIELDS = [("id",), ("timestamp",), ("action",), ("target",), ("request",), ("actor",),
          ("source",), *(("target", k) for k in ("repository", "digest", "tag", "mediaType",
                                                  "size", "length", "url")),
          *(("request", k) for k in ("method", "useragent", "addr", "host")),
          ("actor", "name"), ("source", "addr")]
ABSENT = object()


def replaced(doc: Any, changes: list[tuple[int, tuple[str, ...], Any]]) -> Any:
    """``doc`` with each (event index, field path, value) set, or removed for ABSENT."""
    doc = copy.deepcopy(doc)
    for index, path, value in changes:
        node = doc["events"][index % len(doc["events"])]
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if value is ABSENT:
            node.pop(path[-1], None)
        else:  # a copy: a later change must not write into a shared EDGE_VALUES {} (a cycle)
            node[path[-1]] = copy.deepcopy(value)
    return doc


def test_the_fast_path_agrees_on_every_field_at_every_edge() -> None:
    for index in range(len(USUAL["events"])):
        for path in FIELDS:
            for value in [*EDGE_VALUES, ABSENT]:
                doc = replaced(USUAL, [(index, path, value)])
                assert outcome(lambda d: parse_envelope(d, CLASSIFIER), doc) == outcome(
                    checked, doc), (index, path, value)
                got, expected = by_line(doc)
                assert got == expected, (index, path, value)


@settings(max_examples=1000, deadline=None)
@given(changes=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(FIELDS),
                                  EDGES | st.just(ABSENT) | JSON), min_size=1, max_size=3))
def test_the_fast_path_agrees_with_the_checked_parser(
        changes: list[tuple[int, tuple[str, ...], Any]]) -> None:
    doc = replaced(USUAL, changes)
    assert outcome(lambda d: parse_envelope(d, CLASSIFIER), doc) == outcome(checked, doc)
    got, expected = by_line(doc)
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(path=st.lists(st.integers(0, 50), max_size=6), value=EDGES | JSON)
def test_the_fast_path_agrees_on_any_part_replaced(path: list[int], value: Any) -> None:
    doc = mutate(USUAL, path, value)
    assert outcome(lambda d: parse_envelope(d, CLASSIFIER), doc) == outcome(checked, doc)
    got, expected = by_line(doc)
    assert got == expected
