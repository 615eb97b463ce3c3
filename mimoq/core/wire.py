"""The cross-language contract: Redis key names, task names, the JSON serializer, enqueue script.

Every Redis key mimoq or arq writes is spelled here and nowhere else. The format is
documented in docs/wire-format.md and pinned by tests that use raw Redis commands.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from mimoq.core import arq_compat, scripts

# --- arq's own keys (pinned in arq_compat); listed here so other languages have one list ----
ARQ_JOB_PREFIX: Final = arq_compat.JOB_PREFIX
ARQ_IN_PROGRESS_PREFIX: Final = arq_compat.IN_PROGRESS_PREFIX
ARQ_RETRY_PREFIX: Final = arq_compat.RETRY_PREFIX
ARQ_RESULT_PREFIX: Final = arq_compat.RESULT_PREFIX

# --- mimoq's keys ---------------------------------------------------------------------
QUEUE_NAME: Final = "mimoq:queue"
HEALTH_CHECK_KEY: Final = QUEUE_NAME + ":health-check"
RESULT_PREFIX: Final = "mimoq:result:"
#: Pub/sub channel per job: its status is published there once its result record is
#: written (``Producer.wait`` listens instead of polling). A channel, not a key.
DONE_CHANNEL_PREFIX: Final = "mimoq:done:"
DEAD_LETTER_PREFIX: Final = "mimoq:dead:"
DEAD_LETTER_INDEX: Final = "mimoq:dead"
#: A callback delivery's url, headers, signed body and attempt history (worker-written).
DELIVERY_PREFIX: Final = "mimoq:delivery:"
LIMITER_PREFIX: Final = "mimoq:limit:"
DEFERRALS_PREFIX: Final = "mimoq:deferrals:"
#: A long job's fan-out plan (its chunk jobs), JSON, while they run: see worker/fanout.py.
FANOUT_PREFIX: Final = "mimoq:fanout:"
#: A long job's chunk count and the chunks finished so far (a hash): the last one to finish
#: makes the parent due (scripts/fanout_chunk_done.lua).
FANOUT_WAKE_PREFIX: Final = "mimoq:fanout-wake:"
#: The account a job (a fan-out: its parent, for every chunk) is routed to while it has
#: calls to make, so it comes back to the account holding its limiter ticket: see
#: worker/accounts/route_choice.py. A string, written with a TTL.
ROUTE_PREFIX: Final = "mimoq:route:"
WORKER_HEARTBEAT_PREFIX: Final = "mimoq:worker:"
#: The account breaker (worker/accounts/breaker.py, docs/accounts.md): ``mimoq:account:<name>``
#: a hash of the account's pause (since, reason, error_type, status, probe_at, interval,
#: probes), ``mimoq:account:<name>:429s`` its current run of 429s (a counter with a TTL), and
#: the set of paused account names.
ACCOUNT_PREFIX: Final = "mimoq:account:"
ACCOUNTS_PAUSED_KEY: Final = "mimoq:accounts:paused"
#: Pub/sub channel: every change of the paused set is published here (the account's name);
#: workers keep a copy of the set and read it again on each (worker/accounts/paused_view.py).
ACCOUNTS_CHANGED_CHANNEL: Final = "mimoq:accounts:changed"
#: hash: job id -> id of the worker running it (see worker/orphans.py)
INFLIGHT_KEY: Final = "mimoq:inflight"
#: Which tenant of the HTTP front door a job belongs to (mimoq/http): only it may read the job.
HTTP_OWNER_PREFIX: Final = "mimoq:owner:"
#: The HTTP front door's OpenAI-style files and batches (mimoq/http/files.py, batches.py).
HTTP_FILE_PREFIX: Final = "mimoq:file:"
HTTP_BATCH_PREFIX: Final = "mimoq:batch:"
#: Requests per limiter window of each model, sampled by `mimoq serve` for its dashboard.
QUOTA_HISTORY_PREFIX: Final = "mimoq:quota-use:"
RECENT_FAILURES_KEY: Final = "mimoq:failures"  # capped list of failed-job summaries, newest first
#: Bulk jobs wait here, per model and tenant, until the scheduler admits them into the queue
#: (docs/scheduling.md): ``mimoq:wait:<model>:tenant:<tenant>`` lists of job ids, the
#: ``mimoq:wait:<model>:tenants`` round-robin ring of tenants with waiting jobs, the
#: ``mimoq:wait:<model>:admitted`` look-ahead (job id -> admission time) and the set of
#: models with waiting jobs. Interactive jobs wait the same way, under
#: ``mimoq:wait:<model>:interactive:…``, once a tenant floods the lane.
#: enqueue.lua spells the same names.
WAIT_PREFIX: Final = "mimoq:wait:"
WAIT_MODELS_KEY: Final = "mimoq:wait:models"
#: ``mimoq:admit-round:<model>``: set (NX, for a little under a round's interval) by the
#: worker that runs the fleet's periodic admission round of a model; the others skip it.
ADMIT_ROUND_PREFIX: Final = "mimoq:admit-round:"
#: The tenant of jobs that name none (a valid tenant name cannot start with "_").
NO_TENANT: Final = "_"
#: Interactive jobs of one model and tenant in the queue at most (not yet granted a call);
#: past this they wait in the tenant's list, and each grant admits the tenant's next one.
#: scripts/enqueue.lua spells it once too (it runs on its own, from any language; a test
#: checks the two agree); the limiter scripts get it with their configuration.
INTERACTIVE_DIRECT: Final = 16
#: ``mimoq:wait:<model>:interactive:over-share``: present (for about a second) after the
#: limiter parked one of the model's interactive jobs because the lane was over its share.
#: While it is, enqueue.lua sends a tenant's interactive job straight to the queue only when
#: none of the tenant's is there, as admission does; the rest wait in the tenant's list
#: instead of being picked only to be parked (issue #22). enqueue.lua spells it too.
INTERACTIVE_OVER_SHARE_SUFFIX: Final = "interactive:over-share"

#: A run's progress (docs/cancel.md, "Runs"): ``mimoq:run:<run>`` a hash of counters (``total``,
#: ``succeeded``, ``failed``, ``cancelled``, ``model:<model>``) and facts (``tenant``,
#: ``priority``, ``created_at``, ``sealed``, ``ended_at``, ``callback``), and
#: ``mimoq:run:<run>:pending`` the set of its job ids not finished yet. enqueue.lua adds a
#: job to both; the one finish path (mimoq.core.runs) takes it out.
RUN_PREFIX: Final = "mimoq:run:"
#: The runs not ended yet, a sorted set scored by creation time (the dashboard lists them).
RUNS_ACTIVE_KEY: Final = "mimoq:runs"

#: A job's cancel marker (docs/cancel.md): "ticket <limiter key base>" while it holds a
#: reserved slot, "granted" once the limiter granted its MiMo call (the acquire script),
#: "cancelled" once cancel.lua withdrew it; the grant and the cancel
#: read it atomically, so a cancelled job is never granted. A string, with a TTL.
CANCEL_PREFIX: Final = "mimoq:cancel:"
#: Pub/sub channel: cancel.lua publishes the id of each cancelled job a worker holds.
CANCEL_CHANNEL: Final = "mimoq:cancel"
#: Usage per tenant and model in one fixed window: ``mimoq:usage:<window_s>:<start>``, a hash
#: of ``<tenant>|<model>|<metric>`` -> amount. A tenant's total (what limits read) is the sum
#: of its models' fields, taken when read. Written by scripts/usage_fold.lua from the journal
#: below, or by scripts/usage_add.lua once per finished job of a tenant with limits; it
#: expires a while after its window ends (docs/usage.md).
USAGE_PREFIX: Final = "mimoq:usage:"
#: Finished jobs' usage not yet added to its windows: a list of JSON entries
#: (core/usage_journal.py), one ``RPUSH`` per job on its result write instead of a script
#: of one ``HINCRBYFLOAT`` per metric and window; workers fold it into the window hashes in
#: batches (scripts/usage_fold.lua), and readers of a span add what is still in it. The
#: jobs of a tenant with limits skip it: its gate reads the hashes.
USAGE_JOURNAL_KEY: Final = USAGE_PREFIX + "journal"
#: A tenant held at its limit (MIMOQ_TENANT_LIMITS): a JSON string that expires when its
#: window frees. Its admission turns are skipped (core/scripts/limiter_common.lua) and its new
#: jobs wait in its lists (enqueue.lua spells the same prefix).
TENANT_HELD_PREFIX: Final = "mimoq:tenant-held:"

#: A tenant's unfinished jobs (docs/cancel.md): ``mimoq:tenant-jobs:<tenant>`` (``_`` for jobs
#: that name none), a sorted set of job id -> when its arq job key expires (unix ms), so
#: ``mimoq cancel --tenant`` reaches jobs no wait list holds (deferred by their producer,
#: waiting for a retry) at O(the tenant's unfinished jobs). enqueue.lua adds each job; the
#: one finish path (mimoq.core.finish) takes it out. Its member ``~ttl`` (never a job id)
#: scores the key's own expiry, an hour past its last job's: enqueue.lua renews the TTL only
#: when that score grows, so an enqueue costs one ZADD, not a ZADD and a PEXPIRE.
TENANT_JOBS_PREFIX: Final = "mimoq:tenant-jobs:"
TENANT_JOBS_TTL_MEMBER: Final = "~ttl"

# --- task names (the "f" of an arq job) ---------------------------------------------------
TASK_SPEECH: Final = "speech"
TASK_TRANSCRIPTION: Final = "transcription"
TASK_CALLBACK: Final = "deliver_callback"
TASK_INVALID: Final = "invalid_job"
#: the one keyword argument each task takes
TASK_KWARG: Final = {TASK_SPEECH: "job", TASK_TRANSCRIPTION: "job", TASK_CALLBACK: "delivery"}


def job_key(job_id: str) -> str:
    return ARQ_JOB_PREFIX + job_id


def in_progress_key(job_id: str) -> str:
    return ARQ_IN_PROGRESS_PREFIX + job_id


def result_key(job_id: str) -> str:
    return RESULT_PREFIX + job_id


def done_channel(job_id: str) -> str:
    return DONE_CHANNEL_PREFIX + job_id


def fanout_key(job_id: str) -> str:
    return FANOUT_PREFIX + job_id


def fanout_wake_key(job_id: str) -> str:
    return FANOUT_WAKE_PREFIX + job_id


def route_key(affinity: str) -> str:
    """The account a job, or every chunk of a fan-out (``affinity``: the parent), is routed to."""
    return ROUTE_PREFIX + affinity


def account_key(account: str) -> str:
    """An account's pause record (the breaker's state; absent while it is not paused)."""
    return ACCOUNT_PREFIX + account


def account_429s_key(account: str) -> str:
    """An account's current run of 429s (reset by a success)."""
    return ACCOUNT_PREFIX + account + ":429s"


def owner_key(job_id: str) -> str:
    return HTTP_OWNER_PREFIX + job_id


def _lane_part(lane: str) -> str:
    # The bulk lane's keys came first and keep their names; the interactive lane's are
    # marked (a tenant cannot be named "interactive:...", so the names never collide).
    return "" if lane == "bulk" else f"{lane}:"


def wait_list_key(model: str, tenant: str | None, lane: str = "bulk") -> str:
    """The list of one model's jobs of one tenant and lane that wait for admission."""
    return f"{WAIT_PREFIX}{model}:{_lane_part(lane)}tenant:{tenant or NO_TENANT}"


def wait_ring_key(model: str, lane: str = "bulk") -> str:
    """The round-robin ring of the tenants that have jobs of ``model`` waiting in ``lane``."""
    return f"{WAIT_PREFIX}{model}:{_lane_part(lane)}tenants"


def admit_round_key(model: str) -> str:
    """Held by the worker running ``model``'s periodic admission round (admission.py)."""
    return ADMIT_ROUND_PREFIX + model


def admitted_key(model: str) -> str:
    """Bulk jobs of ``model`` admitted into the queue that have not been granted a call yet."""
    return f"{WAIT_PREFIX}{model}:admitted"


def interactive_admitted_key(model: str, tenant: str | None) -> str:
    """One tenant's interactive jobs of ``model`` in the queue, not yet granted a call."""
    return f"{WAIT_PREFIX}{model}:interactive:admitted:{tenant or NO_TENANT}"


def interactive_over_share_key(model: str) -> str:
    """Present while ``model``'s interactive lane has lately been over its share."""
    return f"{WAIT_PREFIX}{model}:{INTERACTIVE_OVER_SHARE_SUFFIX}"


def tenant_jobs_key(tenant: str | None) -> str:
    """The index of ``tenant``'s unfinished jobs (None: the jobs that name no tenant)."""
    return f"{TENANT_JOBS_PREFIX}{tenant or NO_TENANT}"


def usage_key(window_s: int, start: int) -> str:
    """The usage hash of the fixed window of ``window_s`` seconds starting at ``start``."""
    return f"{USAGE_PREFIX}{window_s}:{start}"


def tenant_held_key(tenant: str | None) -> str:
    """Present while ``tenant`` (None: jobs that name none) is held at its limit."""
    return f"{TENANT_HELD_PREFIX}{tenant or NO_TENANT}"


def enqueue_keys(job_id: str) -> list[str]:
    """KEYS of the enqueue script, in order."""
    return [job_key(job_id), ARQ_RESULT_PREFIX + job_id, result_key(job_id), QUEUE_NAME]


def run_key(run: str) -> str:
    return RUN_PREFIX + run


def run_pending_key(run: str) -> str:
    """The set of a run's job ids that have not finished yet (cancel reads it)."""
    return RUN_PREFIX + run + ":pending"


def cancel_key(job_id: str) -> str:
    return CANCEL_PREFIX + job_id


def callback_job_id(job_id: str) -> str:
    """The callback job's arq id, and its delivery id: stable for every attempt and replay."""
    return f"cb-{job_id}"


# --- serializer ---------------------------------------------------------------------------


def _default(value: object) -> object:
    # arq puts exceptions and datetimes in its own result records; keep them readable JSON.
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def serialize(data: dict[str, Any]) -> bytes:
    """arq's job serializer: compact UTF-8 JSON, never pickle."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def dumps(data: Any) -> str:
    """Compact JSON for result records and callback bodies (the same rules as jobs)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=_default)


def _invalid(reason: str, raw: object, et: int | None) -> dict[str, Any]:
    return {
        "t": None,
        "f": TASK_INVALID,
        "a": [],
        "k": {"reason": reason, "raw": raw},
        "et": et or 0,
    }


def deserialize(raw: bytes) -> dict[str, Any]:
    """arq's job deserializer, made total: anything malformed becomes an ``invalid_job`` task.

    A foreign producer may write anything under ``arq:job:<id>``. arq would fail such a job
    without a trace we can read; routing it to a task of ours turns it into a failure result
    (and the worker keeps running).
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return _invalid(
            f"job is not valid UTF-8 JSON ({exc})", raw[:200].decode("utf-8", "replace"), None
        )
    if not isinstance(data, dict):
        return _invalid("job must be a JSON object", data, None)
    et = data.get("et") if isinstance(data.get("et"), int) else None
    task = data.get("f")
    if task not in TASK_KWARG:
        return _invalid(
            f"unknown task {task!r}: use one of {', '.join(sorted(TASK_KWARG))}", data.get("k"), et
        )
    kwarg = TASK_KWARG[task]
    kwargs = data.get("k")
    if data.get("a") not in (None, []) or not isinstance(kwargs, dict) or set(kwargs) != {kwarg}:
        return _invalid(f"task {task!r} takes exactly one keyword argument {kwarg!r}", kwargs, et)
    try_ = data.get("t")
    return {
        "t": try_ if isinstance(try_, int) else None,
        "f": task,
        "a": [],
        "k": kwargs,
        "et": et or 0,
    }


def enqueue_script() -> str:
    """The Lua source of the atomic enqueue (also usable from redis-cli: see the README)."""
    return scripts.named("enqueue").text
