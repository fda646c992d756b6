"""The one way to a registry: :func:`open` (and :func:`open_async`, :func:`open_writable`)
picks the backend from ``registry.kind``.

A backend is a module of this package, named in :data:`KINDS`, imported only when that kind
is asked for (ECR's brings boto3; a Distribution user never loads it). It provides::

    def open_registry(config: Config, options: Options) -> Registry: ...
    # optional: its own asyncio face; without it, the synchronous one runs in threads
    def open_async_registry(config: Config, options: Options) -> AsyncRegistry: ...

and builds its own credentials from ``options`` and ``config`` (settings, environment, the
cloud SDK's default chain), as go-containerregistry's ``authn`` keychain does.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Config
    from .protocol import AsyncRegistry, CallRecorder, Registry, WritableRegistry

__all__ = ["DEFAULT_KIND", "KINDS", "Options", "open", "open_async", "open_writable"]

# registry.kind -> the module of this package that implements it
KINDS: dict[str, str] = {
    "distribution": "recommender.registry.distribution",
    "ecr": "recommender.registry.ecr",
}
DEFAULT_KIND = "distribution"


@dataclass(frozen=True)
class Options:
    """What a caller may ask of a backend beyond its settings.

    ``url``: another registry than the configured one (``scan --registry``, the backup
    registry); ``credentials``: ``(username, password)`` to use instead of the configured
    ones (``password`` a :class:`~recommender.settings.Secret`, a string or None; both None:
    anonymous), None for the configured ones; ``recorder``: receives every call
    (the executor's audit); ``max_connections``: most requests in flight (a scan's
    concurrency); None leaves each to the backend's default.
    """

    url: str | None = None
    credentials: tuple[str | None, Any] | None = None
    recorder: CallRecorder | None = None
    max_connections: int | None = None


def _backend(config: Config, kind: str | None) -> ModuleType:
    kind = kind or config["registry.kind"] or DEFAULT_KIND
    module = KINDS.get(kind)
    if module is None:
        raise ConfigError(f"registry.kind {kind!r} is not one of {', '.join(sorted(KINDS))}",
                          setting="registry.kind", value=kind)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ConfigError(f"registry.kind {kind!r} is not available in this build "
                              f"(no module {module})", setting="registry.kind",
                              value=kind) from None
        raise ConfigError(f"registry.kind {kind!r} needs the Python package {exc.name!r}, "
                          "which is not installed", setting="registry.kind", value=kind,
                          package=exc.name) from None


def open(config: Config, *, kind: str | None = None, url: str | None = None,  # noqa: A001
         credentials: tuple[str | None, Any] | None = None,
         recorder: CallRecorder | None = None,
         max_connections: int | None = None) -> Registry:
    """The configured registry (``registry.kind``, or ``kind``), synchronous; close it after.
    The arguments are :class:`Options`'."""
    backend = _backend(config, kind)
    options = Options(url, credentials, recorder, max_connections)
    return cast("Registry", backend.open_registry(config, options))


def open_async(config: Config, *, kind: str | None = None, url: str | None = None,
               max_connections: int | None = None) -> AsyncRegistry:
    """The configured registry's asyncio face (the scan): the backend's own, or its
    synchronous one in at most ``max_connections`` worker threads."""
    backend = _backend(config, kind)
    options = Options(url=url, max_connections=max_connections)
    native = getattr(backend, "open_async_registry", None)
    if native is not None:
        return cast("AsyncRegistry", native(config, options))
    from .threaded import ThreadedRegistry

    return ThreadedRegistry(backend.open_registry(config, options),
                            workers=max_connections or config["registry.concurrency"])


def open_writable(config: Config, *, url: str | None = None,
                  credentials: tuple[str | None, Any] | None = None,
                  recorder: CallRecorder | None = None) -> WritableRegistry:
    """A Distribution registry tagwarden may push to (the backup registry, restores, the
    configured one when it is Distribution): pushing is Distribution-only today."""
    kind = config["registry.kind"] or DEFAULT_KIND
    if url is None and kind != "distribution":
        raise ConfigError(f"pushing (restore) needs a Distribution registry; registry.kind is "
                          f"{kind!r} (restore from a backup registry or layout into one)",
                          setting="registry.kind", value=kind)
    backend = _backend(config, "distribution")
    options = Options(url, credentials, recorder)
    return cast("WritableRegistry", backend.open_registry(config, options))
