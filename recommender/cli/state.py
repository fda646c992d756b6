"""The Typer app and the per-invocation state (configuration and store, opened lazily)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from .. import config as config_mod
from ..logs import configure_logging
from ..notify import Notifier, load_notifier
from ..store import Store, open_store

__all__ = ["State", "app", "state"]

app = typer.Typer(
    name="tagwarden",
    help="Keeps container registries clean without ever breaking a deploy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass
class State:
    config_path: Path | None = None
    db_url: str | None = None
    _config: config_mod.Config | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)

    @property
    def config(self) -> config_mod.Config:
        if self._config is None:
            self._config = config_mod.load(
                self.config_path, overrides={"store.url": self.db_url} if self.db_url else None
            )
            # Every command that reads the configuration logs as it says (stderr).
            configure_logging(self._config["log.level"], self._config["log.format"])
        return self._config

    @property
    def store(self) -> Store:
        """The store, migrated to the newest schema on first use."""
        if self._store is None:
            self._store = open_store(self.config["store.url"])
        return self._store

    @property
    def notifier(self) -> Notifier:
        """The installed notifier (Slack), found without importing it by name."""
        return load_notifier(self.config)

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()
            self._store = None


@app.callback()
def _global(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="TAGWARDEN_CONFIG", help="TOML configuration file.",
                     dir_okay=False),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="TAGWARDEN_DB",
                     help="SQLAlchemy URL of the store (default sqlite:///tagwarden.db)."),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="TAGWARDEN_DEBUG",
                     help="Print the traceback of an internal error, not only its line."),
    ] = False,
) -> None:
    st = State(config_path=config, db_url=db)
    ctx.obj = st
    ctx.call_on_close(st.close)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_object(State)
    assert obj is not None, "the global callback always sets the state"
    return obj
