"""Housekeeping commands: ``migrate``, ``backfill-clients``, ``config docs``, ``config typing``,
``config show``."""

from __future__ import annotations

import typer

from .. import config as config_mod
from .state import app, state

config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the store's schema to the newest migration."""
    st = state(ctx)
    st.store.check_schema()
    typer.echo(f"store at {st.store.url} is up to date")


@app.command("backfill-clients")
def backfill_clients(ctx: typer.Context) -> None:
    """Fill the distinct-real-clients table from the raw events the store still keeps (for a
    store loaded before the table existed; safe to repeat, and beside a running collector)."""
    from ..collector.clients import backfill_clients as fill

    st = state(ctx)
    with st.store.begin() as conn:
        rows = fill(conn)
    typer.echo(f"{rows} (repository, digest, client) rows written or confirmed")


@config_app.command("docs")
def config_docs() -> None:
    """Print the Markdown reference of every setting (docs/configuration.md)."""
    typer.echo(config_mod.render_docs(), nl=False)


@config_app.command("typing")
def config_typing() -> None:
    """Print the typed accessors of every setting (recommender/settings_typed.py)."""
    typer.echo(config_mod.render_typing(), nl=False)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective settings, teams and policies as TOML (secrets masked)."""
    typer.echo(config_mod.render_effective(state(ctx).config), nl=False)
