"""The store's schema (SQLAlchemy Core). One ``metadata``; Alembic migrations mirror it.

Sections: telemetry (events, rollups, tag history), Kubernetes (snapshots, running refs),
inventory (scans, manifests, blobs, children). Later sections belong to the recommender,
the executor and the audit log.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from .types import BigId, UTCDateTime

__all__ = [
    "approvals",
    "audit_head",
    "audit_log",
    "batch_items",
    "batches",
    "blobs",
    "declared_refs",
    "events",
    "job_runs",
    "k8s_snapshots",
    "manifest_blobs",
    "manifest_children",
    "manifest_clients",
    "manifests",
    "metadata",
    "models",
    "rollups",
    "running_refs",
    "scans",
    "scheduler_lock",
    "slack_updates",
    "tag_history",
]

# Deterministic constraint names so SQLite and PostgreSQL migrations agree.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# --- telemetry ---------------------------------------------------------------------------------

# One normalised event. ``usage`` is use|scanner|replication|janitor|self|blob|failed.
# ``source_event_id`` is the source's id (Distribution ``id``) or a content hash when the
# source has none; (source, source_event_id) de-duplicates retries.
events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("time", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("source", String(32), nullable=False),
    Column("source_event_id", String(128), nullable=False),
    Column("action", String(16), nullable=False),
    Column("usage", String(16), nullable=False),
    Column("registry", String(255)),
    Column("repository", String(255), nullable=False),
    Column("digest", String(80)),
    Column("tag", String(128)),
    Column("media_type", String(128)),
    Column("size", BigInteger),
    Column("method", String(8)),
    Column("user_agent", String(512)),
    Column("actor", String(255)),
    Column("client_addr", String(64)),
    Column("environment", String(128)),
    Column("cluster", String(128)),
    Column("namespace", String(128)),
    UniqueConstraint("source", "source_event_id"),
    # No (repository, digest, time) index: its inserts land all over a B-tree that outgrows
    # the page cache, and it cost a large share of the file ingest's writing CPU (bench/),
    # for one weekly reader (bot/digest.py), which walks the week by time.
    Index("ix_events_time", "time"),
)

# Daily rollups, kept for ever: per day, repository, digest, tag ('' none), action, usage.
rollups = Table(
    "rollups",
    metadata,
    Column("day", Date, primary_key=True),
    Column("repository", String(255), primary_key=True),
    Column("digest", String(80), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("action", String(16), primary_key=True),
    Column("usage", String(16), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("first_at", UTCDateTime(), nullable=False),
    Column("last_at", UTCDateTime(), nullable=False),
    Index("ix_rollups_repository_digest", "repository", "digest"),
)

# Distinct real clients (K): per manifest, each client that pulled it for use (usage class
# ``use``) and the earliest such pull. The client is the host of the request address without
# its port (a node or CI runner; see recommender/collector/clients.py for NAT and pulls without
# an address). Kept for ever, like the rollups, which do not say who pulled.
manifest_clients = Table(
    "manifest_clients",
    metadata,
    Column("repository", String(255), primary_key=True),
    Column("digest", String(80), primary_key=True),
    Column("client", String(64), primary_key=True),
    Column("first_seen", UTCDateTime(), nullable=False),
)

# Time-versioned tag -> digest map: the tag pointed at ``digest`` during [valid_from, valid_to).
tag_history = Table(
    "tag_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("repository", String(255), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("digest", String(80), nullable=False),
    Column("valid_from", UTCDateTime(), nullable=False),
    Column("valid_to", UTCDateTime()),
    Column("source", String(16), nullable=False),  # push | scan | delete | mount
    Index("ix_tag_history_repository_tag_valid_from", "repository", "tag", "valid_from"),
    Index("ix_tag_history_repository_digest", "repository", "digest"),
)

# --- Kubernetes -------------------------------------------------------------------------------

# One pod list from one source (cluster). What runs at t = refs of each source's latest
# snapshot taken at or before t.
k8s_snapshots = Table(
    "k8s_snapshots",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(128), nullable=False),
    Column("taken_at", UTCDateTime(), nullable=False),
    Column("pods", Integer, nullable=False),
    Index("ix_k8s_snapshots_source_taken_at", "source", "taken_at"),
)

running_refs = Table(
    "running_refs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("snapshot_id", BigInteger, ForeignKey("k8s_snapshots.id", ondelete="CASCADE"),
           nullable=False),
    Column("registry", String(255), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("digest", String(80)),
    Column("tag", String(128)),
    Column("namespace", String(128)),
    Column("pod", String(255)),
    Column("container", String(255)),
    Column("container_kind", String(16)),  # container | init | ephemeral
    Column("image", Text, nullable=False),  # as reported
    Index("ix_running_refs_snapshot_id", "snapshot_id"),
    Index("ix_running_refs_repository_digest", "repository", "digest"),
)

# --- declared references (E) ----------------------------------------------------------------

# An image reference declared in a Dockerfile, manifest, Compose file, Argo CD Application or
# on a Docker host, valid during [valid_from, valid_to). Each ingest of a source closes the rows
# it no longer contains, so a removed line stops protecting while history stays answerable.
# ``repository`` is the path in the managed registry (NULL: the reference names another one).
declared_refs = Table(
    "declared_refs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(255), nullable=False),
    Column("location", String(1024), nullable=False),  # deploy/cron.yaml:14
    Column("kind", String(16), nullable=False),  # dockerfile | kubernetes | compose | ...
    Column("detail", String(512), nullable=False),  # CronJob/nightly container app (suspended)
    Column("image", Text, nullable=False),  # as written
    Column("registry", String(255), nullable=False),
    Column("path", String(255), nullable=False),  # repository path as written
    Column("repository", String(255)),
    Column("tag", String(128)),
    Column("digest", String(80)),
    Column("valid_from", UTCDateTime(), nullable=False),
    Column("valid_to", UTCDateTime()),
    Index("ix_declared_refs_source_valid_to", "source", "valid_to"),
    Index("ix_declared_refs_repository_tag", "repository", "tag"),
    Index("ix_declared_refs_repository_digest", "repository", "digest"),
)

# --- inventory --------------------------------------------------------------------------------

scans = Table(
    "scans",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("registry", String(255), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("repositories", Integer),
    Column("tags", Integer),
    Column("manifests", Integer),
    Column("errors", JSON),
)

# A manifest known from a scan or from telemetry. ``deleted_at`` set when seen deleted.
manifests = Table(
    "manifests",
    metadata,
    Column("repository", String(255), primary_key=True),
    Column("digest", String(80), primary_key=True),
    Column("media_type", String(128)),
    Column("artifact_type", String(128)),
    Column("size", BigInteger),  # the manifest's own bytes
    Column("total_bytes", BigInteger),  # manifest + config + layers (+ children for an index)
    Column("created_at", UTCDateTime()),  # config blob ``created``
    Column("first_seen", UTCDateTime(), nullable=False),  # push time or first sighting
    Column("last_scanned", UTCDateTime()),
    Column("deleted_at", UTCDateTime()),
    Column("subject", String(80)),  # OCI 1.1 subject or cosign sha256-<hex>.sig target
    Column("referrer_kind", String(16)),  # signature | attestation | sbom | other
    Column("is_index", Boolean, nullable=False, default=False),
    Column("labels", JSON),
    Column("platform", String(64)),
    Index("ix_manifests_subject", "repository", "subject"),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(80), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(128)),
)

# Which blobs a manifest references (config and layers). Registries store a blob once; GC
# frees it only when no manifest anywhere still references it.
manifest_blobs = Table(
    "manifest_blobs",
    metadata,
    Column("repository", String(255), primary_key=True),
    Column("digest", String(80), primary_key=True),
    Column("blob", String(80), primary_key=True),
    Index("ix_manifest_blobs_blob", "blob"),
)

manifest_children = Table(
    "manifest_children",
    metadata,
    Column("repository", String(255), primary_key=True),
    Column("parent", String(80), primary_key=True),
    Column("child", String(80), primary_key=True),
    Column("platform", String(64)),
    Index("ix_manifest_children_child", "repository", "child"),
)

# --- decisions and executor (F1) --------------------------------------------------------------

# A batch of suggestions for one team x repository x kind, decided as a whole in Slack.
# ``state``: pending -> approved | denied | snoozed | cancelled; approved -> done (all items
# finished) or cancelled. ``min_approvals`` and ``cool_off_seconds`` are copied from the team
# when the batch is recorded, so a decision never depends on a config reload.
batches = Table(
    "batches",
    metadata,
    Column("id", String(32), primary_key=True),  # opaque random, safe in Slack action values
    Column("batch_key", String(320), nullable=False),  # "repo::kind" from the recommender
    Column("team", String(128), nullable=False),
    Column("channel", String(64)),
    Column("repository", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("min_approvals", Integer, nullable=False),
    Column("cool_off_seconds", Integer, nullable=False),
    Column("posted_channel", String(64)),
    Column("posted_ts", String(32)),  # Slack message ts, to update the message in place
    # Who is posting the message right now, since when: set from NULL before the post (one
    # poster wins), cleared after; a claim older than ``slack.post_claim_timeout`` is retaken.
    Column("posting_by", String(128)),
    Column("posting_at", UTCDateTime()),
    Column("due_at", UTCDateTime()),
    Column("decided_by", String(64)),
    Column("decided_at", UTCDateTime()),
    Column("reason", Text),
    Column("snoozed_until", UTCDateTime()),
    Index("ix_batches_state", "state"),
    Index("ix_batches_team_state", "team", "state"),
)

# One (repository, digest) proposed in a batch. ``state``: suggested -> approved -> executing
# -> deleted | skipped | failed; or dropped (removed before approval), denied, snoozed,
# cancelled. An item is "due" when approved and ``due_at`` has passed. The lease (owner,
# expiry) makes two workers never run the same item and lets a crashed worker's item be
# retried once the lease has expired.
batch_items = Table(
    "batch_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("batch_id", String(32), ForeignKey("batches.id", ondelete="CASCADE"), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("digest", String(80), nullable=False),
    Column("tags", JSON, nullable=False),  # tags at suggestion time
    Column("score", Float),
    Column("reclaimable_bytes", BigInteger),
    Column("reasons", JSON),
    Column("suggested_at", UTCDateTime(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("due_at", UTCDateTime()),
    Column("lease_owner", String(64)),
    Column("lease_expires", UTCDateTime()),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime()),
    Column("result", Text),
    Column("skipped_reason", Text),
    Column("finished_at", UTCDateTime()),
    Column("deleted_bytes", BigInteger),
    Index("ix_batch_items_batch_id", "batch_id"),
    Index("ix_batch_items_state_due_at", "state", "due_at"),
    Index("ix_batch_items_repository_digest", "repository", "digest"),
)

# Who approved a batch. One row per user per batch: a double click counts once.
approvals = Table(
    "approvals",
    metadata,
    Column("batch_id", String(32), ForeignKey("batches.id", ondelete="CASCADE"),
           primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
)

# The append-only, hash-chained audit log. ``hash`` = sha256(prev_hash + canonical JSON of
# seq, at, kind, actor, data); ``data`` is stored as that canonical JSON text so the hash is
# recomputed from exactly the stored bytes.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("data", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_kind", "kind"),
)

# One row (id=1): the chain's head. Appenders lock it (row lock on PostgreSQL, the write lock
# on SQLite) so appends from several processes form one chain.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# --- recommender (D) --------------------------------------------------------------------------

# The model registry: every trained model, its artifact and its validation metrics. ``status``
# is candidate | promoted | retired; the newest promoted model is the one that scores. The
# artifact (joblib bytes) and its JSON sidecar live here so any replica loads the promoted model
# without a shared volume; ``path`` is where it was also exported (``model.dir``), if anywhere.
# Rows from before schema 0002 have no artifact and are loaded from ``path``.
models = Table(
    "models",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("trained_at", UTCDateTime(), nullable=False),  # the ``now`` it was trained as of
    Column("horizon_days", Float, nullable=False),
    Column("path", Text),  # the exported joblib file; its JSON sidecar beside it
    Column("sha256", String(64), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("promoted_at", UTCDateTime()),
    Column("note", Text),
    Column("artifact", LargeBinary),
    Column("sidecar", JSON),
    Index("ix_models_status_created_at", "status", "created_at"),
)

# --- Slack and scheduler (F2) -----------------------------------------------------------------

# The last stage drawn of a batch's Slack message (``result`` once the executor finished), so
# the final message is drawn once however often the job runs.
slack_updates = Table(
    "slack_updates",
    metadata,
    Column("batch_id", String(32), ForeignKey("batches.id", ondelete="CASCADE"),
           primary_key=True),
    Column("stage", String(16), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
)

# The scheduler's lease, on every database (recommender/leadership.py): the replica named in
# ``owner`` runs the jobs until ``expires_at``, renewing it while alive.
scheduler_lock = Table(
    "scheduler_lock",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# One run of a scheduled job (or of its manual twin: ``tagwarden suggest --post``), claimed
# before it starts. ``finished_at`` NULL: running, under a claim by ``claimed_by`` until
# ``expires_at`` (renewed while it runs); the partial unique index lets one run per job be
# running at a time. ``outcome``: running | success | failed | expired (the runner vanished and
# its claim lapsed) | fenced (the runner lost the lead before starting) | registered (the
# scheduler first saw the job: where catch-up starts). ``scheduled_for`` is the fire time the
# run stands for (a manual run: its start), so catch-up knows which fire times are done.
job_runs = Table(
    "job_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job", String(128), nullable=False),
    Column("scheduled_for", UTCDateTime(), nullable=False),
    Column("trigger", String(16), nullable=False),  # schedule | catch-up | manual | baseline
    Column("claimed_by", String(128), nullable=False),
    Column("claimed_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("outcome", String(16), nullable=False),
    Column("duration_seconds", Float),
    Column("error", Text),
    Index("ix_job_runs_job_scheduled_for", "job", "scheduled_for"),
    Index("ux_job_runs_running", "job", unique=True,
          sqlite_where=text("finished_at IS NULL"),
          postgresql_where=text("finished_at IS NULL")),
)
