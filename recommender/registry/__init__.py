"""Talking to registries, through one seam: :func:`open` (``factory.py``) picks the backend
named by ``registry.kind`` and gives a :class:`Registry` (``protocol.py``); code outside this
package needs nothing else. The Distribution backend (``distribution.py``, on ``sync.py`` and
``aio.py``) and a throwaway local registry (``local.py``) live here too."""

from .factory import KINDS, open, open_async, open_writable
from .models import Manifest, Referrer, digest_of, referrer_kind
from .protocol import (
    AsyncRegistry,
    CallRecorder,
    Deleted,
    ImageRecord,
    Reclaim,
    ReclaimHint,
    Registry,
    WritableRegistry,
)

__all__ = [
    "KINDS",
    "AsyncRegistry",
    "CallRecorder",
    "Deleted",
    "ImageRecord",
    "Manifest",
    "Reclaim",
    "ReclaimHint",
    "Referrer",
    "Registry",
    "WritableRegistry",
    "digest_of",
    "open",
    "open_async",
    "open_writable",
    "referrer_kind",
]
