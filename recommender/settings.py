"""Settings declared as data: every :class:`Setting` in :data:`SETTINGS`, the record fields of
``[[team]]`` and ``[[policy]]`` tables, the converters that check file and environment values,
and :class:`Secret`.

``recommender.config`` loads these into a :class:`~recommender.config.Config`; the reference in
``docs/configuration.md`` and the typed accessors in ``recommender/settings_typed.py`` are
generated from this table (``make docs``, ``make typing``) and tests keep both in step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ConfigError
from .timeutil import format_duration, parse_duration

__all__ = [
    "CONVERTERS",
    "DEFAULT_PRODUCTION_ENVS",
    "POLICY_FIELDS",
    "SETTINGS",
    "TEAM_FIELDS",
    "Field_",
    "Secret",
    "Setting",
    "python_type",
    "render_typing",
    "shown",
]


class Secret:
    """A string that does not show itself in ``repr``/``str`` (logs, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# --- converters: each raises ValueError with a readable message -------------------------------


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else _str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, str):
        value = value.strip()
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer, got {value!r}") from None


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _duration(value: Any) -> timedelta:
    return parse_duration(value)


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _secret(value: Any) -> Secret | None:
    if value is None or value == "":
        return None
    if isinstance(value, Secret):
        return value
    return Secret(_str(value))


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": _str,
    "str?": _opt_str,
    "int": _int,
    "float": _float,
    "bool": _bool,
    "duration": _duration,
    "list": _str_list,
    "secret": _secret,
}


@dataclass(frozen=True)
class Setting:
    """One setting: ``key`` is ``section.name``; ``env`` an environment override; ``min`` and
    ``max`` (inclusive, in the converted type) the range a value must fall in, when it has one;
    ``choices`` the values a string setting may take (compared without case), when limited.
    """

    key: str
    default: Any
    kind: str
    help: str
    env: str | None = None
    min: Any = None
    max: Any = None
    choices: tuple[str, ...] = ()

    def convert(self, value: Any) -> Any:
        try:
            converted = CONVERTERS[self.kind](value)
        except ValueError as exc:
            raise ConfigError(f"setting {self.key}: {exc}", setting=self.key) from None
        if self.choices and isinstance(converted, str):
            if converted.lower() not in self.choices:
                raise ConfigError(f"setting {self.key}: {converted!r} is not one of "
                                  f"{', '.join(self.choices)}", setting=self.key,
                                  value=converted)
            converted = converted.lower()
        if converted is not None and ((self.min is not None and converted < self.min)
                                      or (self.max is not None and converted > self.max)):
            raise ConfigError(f"setting {self.key}: {_fmt_value(converted)} is out of range "
                              f"(allowed: {self.range_text()})", setting=self.key,
                              value=str(value))
        return converted

    def range_text(self) -> str:
        """The range in words (``at least 1``, ``0 to 65535``, ``one of text, json``); empty
        without one."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low = None if self.min is None else _fmt_value(self.min)
        high = None if self.max is None else _fmt_value(self.max)
        if low is not None and high is not None:
            return f"{low} to {high}"
        if low is not None:
            return f"at least {low}"
        return f"at most {high}" if high is not None else ""


# Deploy environments that count as production (features.py and policy.py read the setting).
DEFAULT_PRODUCTION_ENVS = ("prod", "prod-*", "prod_*", "production", "production-*", "live")

S = Setting
SETTINGS: tuple[Setting, ...] = (
    # store
    S("store.url", "sqlite:///tagwarden.db", "str",
      "SQLAlchemy URL of the store (SQLite file or postgresql+psycopg://...).", "TAGWARDEN_DB"),
    S("store.raw_retention", "30d", "duration",
      "How long raw events are kept; daily rollups are kept for ever."),
    # collector
    S("collector.token", None, "secret",
      "Bearer token the POST /v1/... endpoints require (unset: endpoints refuse every request).",
      "TAGWARDEN_COLLECTOR_TOKEN"),
    S("collector.max_body_bytes", 4 * 1024 * 1024, "int",
      "Largest request body accepted by the collector (larger: 413).", min=1),
    S("collector.batch_max_events", 5000, "int",
      "Most events the collector writes in one transaction.", min=1),
    S("collector.batch_max_delay", "0.005s", "duration",
      "Longest time an event waits for others to share its write transaction.",
      min=timedelta(0)),
    # log
    S("log.level", "info", "str",
      "Level of tagwarden's own log lines (serve and the CLI) on standard error.",
      choices=("debug", "info", "warning", "error")),
    S("log.format", "text", "str",
      "Log line format: `text` (level, logger, message) or `json` (one JSON object a line).",
      choices=("text", "json")),
    # server
    S("server.host", "127.0.0.1", "str", "Address `tagwarden serve` listens on."),
    S("server.port", 8080, "int", "Port `tagwarden serve` listens on (0: any free port).",
      min=0, max=65535),
    # registry
    S("registry.kind", "distribution", "str",
      "Which registry API tagwarden speaks: `distribution` (the Distribution HTTP API: "
      "Distribution, Harbor, GitLab, Quay, the clouds' /v2 endpoints) or `ecr` (Amazon ECR).",
      "TAGWARDEN_REGISTRY_KIND"),
    S("registry.url", None, "str?",
      "Base URL of the registry tagwarden scans and deletes from (http://host:port)."),
    S("registry.hosts", (), "list",
      "Other host names the registry is known by in image references (pods, deploys); "
      "the host of registry.url is always included."),
    S("registry.username", None, "str?", "Registry user (basic or token auth).",
      "TAGWARDEN_REGISTRY_USERNAME"),
    S("registry.password", None, "secret", "Registry password or token.",
      "TAGWARDEN_REGISTRY_PASSWORD"),
    S("registry.concurrency", 16, "int", "Most registry requests in flight during a scan.",
      min=1),
    S("registry.timeout", "30s", "duration", "Timeout of one registry request.",
      min=timedelta(seconds=1)),
    S("registry.verify_tls", True, "bool", "Verify the registry's TLS certificate."),
    S("registry.gc_config", None, "str?",
      "Path of the registry's own config file, for the garbage-collect command the executor "
      "prints after deleting on a Distribution registry "
      "(`docker-registry garbage-collect <path>`)."),
    S("registry.region", None, "str?",
      "AWS region of an Amazon ECR registry (unset: the SDK's default chain, AWS_REGION, "
      "the profile)."),
    S("registry.registry_id", None, "str?",
      "Account id of the Amazon ECR registry (unset: the caller's own account)."),
    S("registry.endpoint_url", None, "str?",
      "Endpoint URL of the Amazon ECR API (unset: the region's; a VPC endpoint or a test "
      "server otherwise)."),
    # executor (decisions, deletions, backups)
    S("executor.lease", "5m", "duration",
      "How long a worker owns an item it executes; a crashed worker's items are retried after.",
      min=timedelta(seconds=1)),
    S("executor.max_attempts", 8, "int",
      "Attempts at an item whose registry calls keep failing before it is marked failed.",
      min=1),
    S("executor.retry_backoff", "1m", "duration",
      "Wait before the first retry after a temporary registry error (doubles each attempt).",
      min=timedelta(0)),
    S("executor.retry_backoff_max", "1h", "duration", "Longest wait between two retries.",
      min=timedelta(0)),
    S("executor.workers", 8, "int", "Items the executor re-checks and deletes in parallel.",
      min=1),
    S("executor.backup_dir", None, "str?",
      "Directory to back up each manifest and its blobs to (OCI image layout) before deleting; "
      "unset: no backup. `tagwarden restore DIR` pushes a backup back."),
    S("executor.backup_registry", None, "str?",
      "Base URL of another registry each manifest (blobs, children, tags) is copied to before "
      "deleting; unset: none. `tagwarden restore --from-registry URL REPO@DIGEST` copies back."),
    S("executor.backup_registry_username", None, "str?", "User of the backup registry.",
      "TAGWARDEN_BACKUP_REGISTRY_USERNAME"),
    S("executor.backup_registry_password", None, "secret", "Password of the backup registry.",
      "TAGWARDEN_BACKUP_REGISTRY_PASSWORD"),
    S("executor.deny_quiet", "30d", "duration",
      "How long a denied digest is not proposed again."),
    # usage classification (added to the built-in patterns in recommender/usage.py)
    S("usage.scanner_agents", (), "list",
      "Extra user-agent regular expressions of vulnerability scanners (pulls are not use)."),
    S("usage.replication_agents", (), "list",
      "Extra user-agent regular expressions of replication and mirroring jobs."),
    S("usage.janitor_agents", (), "list",
      "Extra user-agent regular expressions of cleanup tools."),
    S("usage.use_agents", (), "list",
      "User-agent regular expressions that always count as use (checked first)."),
    S("usage.scanner_actors", (), "list",
      "Extra actor-name regular expressions of scanner accounts."),
    S("usage.replication_actors", (), "list",
      "Extra actor-name regular expressions of replication accounts."),
    S("usage.self_actors", (), "list",
      "Actor regular expressions of tagwarden's own accounts (its IAM role's ARN for ECR's "
      "CloudTrail records): their requests are `self`, not use."),
    # model (recommender)
    S("model.horizon", "90d", "duration",
      "A manifest is dead when it is not used within this time (the prediction horizon).",
      min=timedelta(days=1)),
    S("model.target_precision", 0.999, "float",
      "Share of suggested manifests that must stay unused, on the latest validation data.",
      min=0.0, max=1.0),
    S("model.dir", None, "str?",
      "Directory each trained model is also exported to (`<id>.joblib` + `<id>.json` sidecar); "
      "unset: none. Models live in the store, so no replica needs this directory."),
    S("model.snapshot_every", "7d", "duration", "Spacing of the training cut-off snapshots.",
      min=timedelta(days=1)),
    S("model.feedback_weight", 5.0, "float",
      "Training weight of a denied suggestion (a 'still used' label from a person).",
      min=0.0),
    S("model.production_environments", DEFAULT_PRODUCTION_ENVS, "list",
      "Deploy environment globs that count as production."),
    S("model.random_state", 0, "int", "Seed of the model's randomness."),
    S("model.max_train_rows", 250_000, "int",
      "Rows the trees train on at most: each training snapshot keeps every used unit and a "
      "re-weighted random share of the unused ones, so time and memory stop growing with the "
      "fleet.", min=1000),
    # slack
    S("slack.api_url", "https://slack.com/api/", "str",
      "Base URL of the Slack Web API (tests and proxies override it)."),
    S("slack.bot_token", None, "secret", "Slack bot token (xoxb-...).", "SLACK_BOT_TOKEN"),
    S("slack.signing_secret", None, "secret", "Slack signing secret.", "SLACK_SIGNING_SECRET"),
    S("slack.team_id", None, "str?",
      "Slack workspace id (T...) the bot serves; clicks from any other workspace are refused."),
    S("slack.app_token", None, "secret",
      "App-level token (xapp-...) for Socket Mode; unset: HTTP mode at /slack/events.",
      "SLACK_APP_TOKEN"),
    S("slack.public_url", "https://tagwarden.example.com", "str",
      "Public base URL of `tagwarden serve` (the app manifest's request URLs)."),
    S("slack.post_interval", "1s", "duration",
      "Pause between two messages to one channel (Slack allows about one per second).",
      min=timedelta(0)),
    S("slack.authz_cache", "60s", "duration",
      "How long a Slack user group's members are cached for authorization.",
      min=timedelta(0)),
    S("slack.digest_page_size", 15, "int", "Items per threaded page of the weekly digest.",
      min=1),
    S("slack.post_claim_timeout", "10m", "duration",
      "How long a poster's claim on a batch holds; a claim older than this (a poster that died "
      "mid-post) is taken over and the batch posted again.", min=timedelta(seconds=1)),
    # scheduler
    S("scheduler.enabled", True, "bool", "Run scheduled jobs in `tagwarden serve`."),
    S("scheduler.suggest_cron", "0 9 * * 1-5", "str",
      "Cron (minute hour day month weekday, UTC) of the suggest-and-post job."),
    S("scheduler.scan_cron", "0 */6 * * *", "str", "Cron (UTC) of the registry scan job."),
    S("scheduler.retrain_cron", "0 3 * * 0", "str", "Cron (UTC) of the weekly retraining."),
    S("scheduler.prune_cron", "30 4 * * *", "str",
      "Cron (UTC) of the daily pruning of raw events older than store.raw_retention and of "
      "job runs older than scheduler.job_runs_retention."),
    S("scheduler.digest_cron", "0 10 * * 1", "str",
      "Cron of the weekly digest, in each team's time zone."),
    S("scheduler.claim_ttl", "2m", "duration",
      "How long a job run's claim lasts without renewal (the runner renews it while the job "
      "runs); a runner that vanished leaves the job blocked this long.",
      min=timedelta(seconds=1)),
    S("scheduler.job_runs_retention", "30d", "duration",
      "How long the record of each job run is kept (the prune job deletes older ones); each "
      "job's newest completed run is always kept, since catch-up counts from it.",
      min=timedelta(days=1)),
    S("scheduler.catch_up_interval", "30s", "duration",
      "How often the leading replica looks for fire times that passed without a completed "
      "run (besides when it takes over) and runs each such job once.",
      min=timedelta(seconds=1)),
    S("scheduler.lock_ttl", "15s", "duration",
      "How long the scheduler's lease lasts without renewal: the leader renews it every third "
      "of this; another replica takes over once it has lapsed.",
      min=timedelta(seconds=1)),
)
del S


@dataclass(frozen=True)
class Field_:
    name: str
    default: Any
    kind: str
    help: str
    required: bool = False


TEAM_FIELDS: tuple[Field_, ...] = (
    Field_("name", None, "str", "Team name, shown in Slack and the audit log.", True),
    Field_("repositories", None, "list", "Repository globs the team owns (`payments/*`).", True),
    Field_("channel", None, "str?", "Slack channel id the team's batches go to."),
    Field_("approvers", (), "list", "Slack user ids allowed to approve, deny and cancel."),
    Field_("approver_group", None, "str?", "Slack user group id whose members may approve."),
    Field_("cool_off", "24h", "duration", "Time between approval and deletion."),
    Field_("min_approvals", 1, "int", "Distinct approvers needed (2 = two-person rule)."),
    Field_("timezone", "UTC", "str", "Time zone of the team's weekly digest."),
)

POLICY_FIELDS: tuple[Field_, ...] = (
    Field_("repositories", ("*",), "list", "Repository globs the rule applies to."),
    Field_("protected_tags", ("latest", "stable"), "list",
           "Tag globs never deleted; a digest carrying one is kept whole."),
    Field_("keep_production", 3, "int",
           "Keep the last N production-deployed versions (by semantic version)."),
    Field_("keep_other", 10, "int", "Keep the last N other versions (by semantic version)."),
    Field_("min_age", "7d", "duration", "Never propose a manifest younger than this."),
    Field_("keep_deployed_within", "30d", "duration",
           "Keep what was deployed to production within this time."),
)


def _fmt_value(value: Any) -> str:
    """A converted value as a person would write it in the TOML file."""
    if isinstance(value, timedelta):
        return format_duration(value)
    return str(value)


def shown(value: Any) -> str:
    """A converted value (not None: TOML has no null) as the TOML file would spell it, for
    `tagwarden config show`: secrets and the password in a URL masked, durations as ``30d``."""
    if isinstance(value, Secret):
        return json.dumps("********" if value else "")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return json.dumps(format_duration(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return json.dumps(_without_password(str(value)))


def _without_password(text: str) -> str:
    """``text`` with a URL's password masked, in its user part or its query (a store's URL
    often carries one); anything else as it is."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.scheme or not parts.netloc:
        return text
    if parts.password is not None:
        parts = parts._replace(
            netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any("password" in key.lower() for key, _ in query):
        parts = parts._replace(query=urlencode(
            [(key, "***" if "password" in key.lower() else value) for key, value in query],
            safe="*"))
    return urlunsplit(parts)


# The Python type each kind converts to; a setting whose default is unset may also be None.
PYTHON_TYPES: dict[str, str] = {
    "str": "str",
    "str?": "str | None",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "duration": "timedelta",
    "list": "tuple[str, ...]",
    "secret": "Secret | None",
}


def python_type(setting: Setting) -> str:
    """The annotation of ``config[setting.key]``, as source text."""
    text = PYTHON_TYPES[setting.kind]
    return text if setting.default is not None or "None" in text else f"{text} | None"


def render_typing(settings: Iterable[Setting] = SETTINGS) -> str:
    """The source of ``recommender/settings_typed.py`` (``tagwarden config typing`` prints it):
    one ``__getitem__`` overload per setting and none for a plain ``str``, so mypy rejects an
    unknown key and knows each value's type."""
    lines = [
        '"""Typed ``config["section.name"]``: one overload per setting.',
        "",
        "Generated by `tagwarden config typing` (`make typing`) from `recommender/settings.py`;",
        "a test keeps it in step. Do not edit by hand.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from datetime import timedelta",
        "from typing import Any, Literal, overload",
        "",
        "from .settings import Secret",
        "",
        '__all__ = ["TypedSettings"]',
        "",
        "",
        "class TypedSettings:",
        '    """Base of :class:`~recommender.config.Config`: ``config[key]`` checked by mypy;',
        '    :meth:`get` for a key only known at run time (untyped)."""',
        "",
        "    def get(self, key: str) -> Any:",
        "        raise NotImplementedError",
    ]
    for s in settings:
        line = f'    def __getitem__(self, key: Literal["{s.key}"]) -> {python_type(s)}: ...'
        if len(line) > 100:  # the project's line length
            line = (f'    def __getitem__(\n        self, key: Literal["{s.key}"]\n'
                    f"    ) -> {python_type(s)}: ...")
        lines += ["", "    @overload", line]
    lines += ["", "    def __getitem__(self, key: str) -> Any:", "        return self.get(key)"]
    return "\n".join(lines) + "\n"
