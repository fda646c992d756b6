"""The Distribution backend (``registry.kind = "distribution"``): the Distribution HTTP API as
the self-hosted registry, Harbor, GitLab, Quay and the clouds' ``/v2`` endpoints speak it.

Credentials: those a caller passes (the backup registry's), else ``registry.username`` and
``registry.password`` (settings or their environment variables); none means anonymous, with
the registry's anonymous tokens where it gives them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .aio import AsyncRegistryClient
from .auth import RegistryAuth
from .protocol import Reclaim, ReclaimHint
from .sync import RegistryClient

if TYPE_CHECKING:
    from ..config import Config
    from .factory import Options

__all__ = ["gc_command", "open_async_registry", "open_registry", "reclaim_hint"]


def gc_command(config: Config) -> str:
    """The exact offline garbage-collect command of the self-hosted registry."""
    path = config["registry.gc_config"] or "<registry config.yml (set registry.gc_config)>"
    return f"docker-registry garbage-collect {path}"


def reclaim_hint(config: Config) -> ReclaimHint:
    """Deleting a manifest frees nothing until the registry's garbage collection runs: the
    offline command for the self-hosted registry (Harbor runs its own GC job instead)."""
    return ReclaimHint(
        Reclaim.OFFLINE_GC,
        "space returns after the registry's garbage collection (registry read-only or "
        "stopped; on Harbor, its GC job)",
        gc_command(config),
    )


def _settings(config: Config, options: Options) -> tuple[str, dict[str, Any]]:
    url = options.url or config["registry.url"]
    if not url:
        # Not "--registry": only `scan` has that option, and its help says so.
        raise ConfigError("registry.url is not set: put the registry's url under [registry] "
                          "in the config file", setting="registry.url")
    if options.credentials is not None:
        username, password = options.credentials
    else:
        username, password = config["registry.username"], config["registry.password"]
    secret = password.reveal() if hasattr(password, "reveal") else password
    params: dict[str, Any] = {
        "auth": RegistryAuth(username, secret),
        "timeout": config["registry.timeout"].total_seconds(),
        "verify": config["registry.verify_tls"],
        "reclaim": reclaim_hint(config),
    }
    if options.max_connections:
        params["max_connections"] = options.max_connections
    return url, params


def open_registry(config: Config, options: Options) -> RegistryClient:
    url, params = _settings(config, options)
    return RegistryClient(url, recorder=options.recorder, **params)


def open_async_registry(config: Config, options: Options) -> AsyncRegistryClient:
    url, params = _settings(config, options)
    return AsyncRegistryClient(url, **params)
