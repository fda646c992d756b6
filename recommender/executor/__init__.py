"""The executor: deletes approved, due items after a last re-check, at most once, audited.

Per item: approved -> (due) -> executing -> deleted | skipped | failed (or back to approved with
``next_attempt_at`` after a temporary registry error). An item is leased before anything
happens to it (owner + expiry, one atomic UPDATE), so two workers never run the same item and
a crashed worker's item is taken again once its lease has expired.

The steps for one item, each with its reason to be there:

1. Store re-checks: a ``use`` since the suggestion (the item or, for an index, a child), a pod
   running it now, a tag added since the suggestion, a guardrail that now keeps it.
2. ``HEAD`` by digest: already gone (someone else, or our own DELETE before a crash) is
   recorded as deleted without a second DELETE.
3. Every tag re-resolved with the full ``Accept`` list (a partial list can yield another
   digest for the same tag): a tag that now names another digest means the approval was given
   on facts that changed (a re-push, a rollback under way) -- skip; the next suggestion decides.
   And every tag of the repository, as the registry lists it: one put on the digest since
   (a promotion whose notification was lost) would go with the DELETE -- skip.
4. A referrer (signature, attestation, SBOM) or a platform child runs after the other items
   and only once its subject or index is gone: a kept image keeps its signatures and platforms.
5. "executing" and the re-check results are committed with their audit rows, then the optional
   backup, then ``DELETE`` by digest, then the result with its audit rows. A crash between
   DELETE and the record is healed by step 2 on the retry.

Every registry call is handed to :class:`CallLog` (the registry's ``recorder``) and lands in
the audit log with the item it was made for (method or API action, redacted target, status).
The registry comes from :func:`recommender.registry.open`, whatever its kind; what must happen
after the deletions before space returns is its ``reclaim`` hint.

The modules, by noun: :mod:`.calls` (the call log), :mod:`.items` (a due item, its outcome,
the report), :mod:`.lease`, :mod:`.recheck`, :mod:`.gc` (the reclaimable bytes) and :mod:`.run`
(the executor itself).
"""

from .calls import CallLog
from .items import DueItem, ExecutionReport, ItemOutcome
from .recheck import guardrails
from .run import Executor

__all__ = [
    "CallLog",
    "DueItem",
    "ExecutionReport",
    "Executor",
    "ItemOutcome",
    "guardrails",
]
