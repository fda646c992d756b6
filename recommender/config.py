"""Configuration: declared once as data, read once at the edge.

Every setting is a :class:`Setting` in :data:`SETTINGS` (``recommender/settings.py``; dotted
key = TOML ``[section] key``, default, type, help, optional environment variable). :func:`load`
reads a TOML file and an environment mapping (injectable for tests) and returns an immutable
:class:`Config`. Secrets are :class:`Secret` values whose ``repr`` is masked. Team and policy
tables (``[[team]]``, ``[[policy]]``) are lists of records declared the same way in
:data:`TEAM_FIELDS` and :data:`POLICY_FIELDS`. ``docs/configuration.md`` is generated from these
declarations and a test keeps it in step. ``config["store.url"]`` is typed per key
(:class:`TypedSettings`, generated into ``recommender/settings_typed.py``), so mypy rejects an
unknown key or a misused value; ``config.get(key)`` reads a key only known at run time.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import (
    CONVERTERS,
    DEFAULT_PRODUCTION_ENVS,
    POLICY_FIELDS,
    SETTINGS,
    TEAM_FIELDS,
    Field_,
    Secret,
    Setting,
    render_typing,
    shown,
)
from .settings_typed import TypedSettings

__all__ = [
    "DEFAULT_PRODUCTION_ENVS",
    "POLICY_FIELDS",
    "SETTINGS",
    "TEAM_FIELDS",
    "Config",
    "PolicyRule",
    "Secret",
    "Setting",
    "Team",
    "TypedSettings",
    "load",
    "render_docs",
    "render_effective",
    "render_typing",
]



def _record(kind: str, fields: tuple[Field_, ...], raw: Any, index: int) -> dict[str, Any]:
    where = f"[[{kind}]] #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table", setting=kind)
    known = {f.name for f in fields}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}", setting=f"{kind}.{unknown[0]}")
    out: dict[str, Any] = {}
    for f in fields:
        if f.name not in raw:
            if f.required:
                raise ConfigError(f"{where}: {f.name} is required", setting=f"{kind}.{f.name}")
            value = f.default
        else:
            value = raw[f.name]
        try:
            out[f.name] = None if value is None else CONVERTERS[f.kind](value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {f.name}: {exc}", setting=f"{kind}.{f.name}") from None
    return out


@dataclass(frozen=True)
class Team:
    name: str
    repositories: tuple[str, ...]
    channel: str | None = None
    approvers: tuple[str, ...] = ()
    approver_group: str | None = None
    cool_off: timedelta = timedelta(hours=24)
    min_approvals: int = 1
    timezone: str = "UTC"

    def owns(self, repository: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, glob) for glob in self.repositories)


@dataclass(frozen=True)
class PolicyRule:
    repositories: tuple[str, ...] = ("*",)
    protected_tags: tuple[str, ...] = ("latest", "stable")
    keep_production: int = 3
    keep_other: int = 10
    min_age: timedelta = timedelta(days=7)
    keep_deployed_within: timedelta = timedelta(days=30)

    def applies_to(self, repository: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, glob) for glob in self.repositories)


@dataclass(frozen=True)
class Config(TypedSettings):
    """Immutable settings. ``config["store.url"]`` (typed per key); teams and policies as
    records."""

    values: Mapping[str, Any]
    teams: tuple[Team, ...] = ()
    policies: tuple[PolicyRule, ...] = ()
    path: Path | None = None
    _index: Mapping[str, Setting] = field(default_factory=dict, repr=False)

    def get(self, key: str) -> Any:
        """The value of a setting named at run time (untyped; prefer ``config["a.b"]``)."""
        if key not in self.values:
            raise KeyError(f"unknown setting {key!r}")
        return self.values[key]

    def team_for(self, repository: str) -> Team | None:
        """The first team whose globs match ``repository`` (config order)."""
        return next((t for t in self.teams if t.owns(repository)), None)

    def policy_for(self, repository: str) -> PolicyRule:
        """The last matching ``[[policy]]`` wins; the built-in defaults when none matches."""
        matching = [p for p in self.policies if p.applies_to(repository)]
        return matching[-1] if matching else PolicyRule()

    def replace(self, **overrides: Any) -> Config:
        """A copy with some dotted settings replaced (converted like file values)."""
        index = {s.key: s for s in SETTINGS}
        values = dict(self.values)
        for dotted, value in overrides.items():
            key = dotted.replace("__", ".")
            if key not in index:
                raise ConfigError(f"unknown setting {key!r}", setting=key)
            values[key] = index[key].convert(value)
        return Config(values, self.teams, self.policies, self.path)


def load(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the TOML file at ``path`` (optional), then the environment, then ``overrides``.

    ``env`` defaults to ``os.environ``; tests pass a dict. Unknown sections or keys are errors,
    so a typo never silently falls back to a default.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    file_path = Path(path) if path else None
    if file_path is not None:
        try:
            raw = tomllib.loads(file_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file_path}", path=str(file_path)) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file_path}: {exc}", path=str(file_path)) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {file_path} is not UTF-8 text (byte "
                              f"{exc.object[exc.start]:#04x} at offset {exc.start})",
                              path=str(file_path)) from None
        except OSError as exc:  # a directory, no permission
            raise ConfigError(f"cannot read config file {file_path}: {exc.strerror}",
                              path=str(file_path)) from None
    index = {s.key: s for s in SETTINGS}
    sections = {key.split(".")[0] for key in index}
    values: dict[str, Any] = {s.key: s.convert(s.default) if s.default is not None else None
                              for s in SETTINGS}
    teams_raw = raw.pop("team", [])
    policies_raw = raw.pop("policy", [])
    for section, body in raw.items():
        if section not in sections:
            raise ConfigError(f"unknown config section [{section}]", setting=section)
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}] must be a table", setting=section)
        for name, value in body.items():
            key = f"{section}.{name}"
            if key not in index:
                raise ConfigError(f"unknown setting {key}", setting=key)
            values[key] = index[key].convert(value)
    for setting in SETTINGS:
        if setting.env and env.get(setting.env):
            values[setting.key] = setting.convert(env[setting.env])
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in index:
            raise ConfigError(f"unknown setting {key}", setting=key)
        values[key] = index[key].convert(value)
    if not isinstance(teams_raw, list) or not isinstance(policies_raw, list):
        raise ConfigError("[[team]] and [[policy]] must be arrays of tables", setting="team")
    teams = tuple(Team(**_record("team", TEAM_FIELDS, t, i)) for i, t in enumerate(teams_raw))
    policies = tuple(
        PolicyRule(**_record("policy", POLICY_FIELDS, p, i)) for i, p in enumerate(policies_raw)
    )
    names = [t.name for t in teams]
    if len(set(names)) != len(names):
        raise ConfigError("two [[team]] tables share a name", setting="team.name")
    for team in teams:
        if team.min_approvals < 1:
            raise ConfigError(f"team {team.name}: min_approvals must be at least 1",
                              setting="team.min_approvals")
    return Config(values, teams, policies, file_path)



def _fmt_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_effective(config: Config) -> str:
    """The settings ``config`` holds, as a TOML file would (``tagwarden config show``): every
    setting as a dotted key (``# key is unset`` when it has no value), then each ``[[team]]``
    and ``[[policy]]``, with the built-in rule a repository no policy matches as a comment.
    Secrets and the passwords in URLs are masked, so the text is safe to share."""
    lines = ["# Effective settings: the file, then the environment, then command-line options.",
             "# Secrets and the passwords in URLs are masked."]
    for key, value in config.values.items():
        lines.append(f"# {key} is unset" if value is None else f"{key} = {shown(value)}")
    for team in config.teams:
        lines += ["", "[[team]]", *_record_lines(team, TEAM_FIELDS)]
    lines += ["", "# Each repository gets the last [[policy]] below that matches it; one that none "
              "matches gets the built-in rule:" if config.policies
              else "# No [[policy]]: every repository gets the built-in rule:"]
    lines += [f"#   {line}" for line in _record_lines(PolicyRule(), POLICY_FIELDS)]
    for policy in config.policies:
        lines += ["", "[[policy]]", *_record_lines(policy, POLICY_FIELDS)]
    return "\n".join(lines) + "\n"


def _record_lines(record: Team | PolicyRule, fields: tuple[Field_, ...]) -> list[str]:
    return [f"{f.name} = {shown(getattr(record, f.name))}" for f in fields
            if getattr(record, f.name) is not None]


def render_docs(settings: Iterable[Setting] = SETTINGS) -> str:
    """The Markdown of ``docs/configuration.md`` (``tagwarden config docs`` prints it)."""
    lines = [
        "# Configuration",
        "",
        "Generated by `tagwarden config docs` from `recommender/settings.py`; a test keeps it",
        "in step. Settings come from the TOML file (`--config`, `TAGWARDEN_CONFIG`), then the",
        "environment variables named here, then command-line options.",
        "",
        "To add a setting, declare it in `SETTINGS` and run `make docs typing`: code reads it as",
        '`config["section.name"]`, whose type mypy knows from `recommender/settings_typed.py`',
        "(an unknown key is a type error); `config.get(key)` reads a key named at run time.",
        "",
        "| setting | default | range | environment | what |",
        "|---|---|---|---|---|",
    ]
    for s in settings:
        lines.append(f"| `{s.key}` | {_fmt_default(s.default)} | {s.range_text()} | "
                     f"{s.env or ''} | {s.help} |")
    for title, kind, fields in (("team", "Team", TEAM_FIELDS), ("policy", "Policy", POLICY_FIELDS)):
        lines += ["", f"## `[[{title}]]` ({kind} tables, repeatable)", "",
                  "| key | default | what |", "|---|---|---|"]
        for f in fields:
            default = "required" if f.required else _fmt_default(f.default)
            lines.append(f"| `{f.name}` | {default} | {f.help} |")
    return "\n".join(lines) + "\n"
