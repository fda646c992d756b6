"""The collector: parsers for every telemetry source, the batched writer, the HTTP endpoints.

Parsers turn decoded documents into :class:`Event` records (or a :class:`PodSnapshot`) and
raise :class:`~recommender.errors.PayloadError` naming the offending field; the
:class:`EventWriter` stores them in one transaction, de-duplicated; the HTTP app and the
``tagwarden ingest`` commands share both. Importing this package imports nothing heavy.
"""

from .cloudtrail import parse_cloudtrail
from .deploy import parse_deploys
from .distribution import parse_envelope
from .events import ACTIONS, USAGE_CLASSES, Event, PodSnapshot, RunningRef, WriteResult
from .harbor import parse_webhook
from .k8s import parse_pod_list
from .writer import EventWriter

__all__ = [
    "ACTIONS",
    "USAGE_CLASSES",
    "Event",
    "EventWriter",
    "PodSnapshot",
    "RunningRef",
    "WriteResult",
    "parse_cloudtrail",
    "parse_deploys",
    "parse_envelope",
    "parse_pod_list",
    "parse_webhook",
]
