"""PURE: least-privilege Redis ACL users for producers and workers (``mimoq acl``).

Redis (7+) checks every command a Lua script runs against the *calling* user's command and
key permissions. So a producer allowed to run ``enqueue.lua`` must be allowed SET/ZADD on
the job and queue keys (and RPUSH/SADD on the bulk-lane wait keys) the script writes; EVAL
of its own script text gains it nothing beyond those same commands on those same keys.
What the ACL does guarantee: a producer cannot write results (``mimoq:result:*`` is
read-only to it), delivery records, dead letters, limiter, heartbeat or in-flight keys, and
cannot run anything administrative. Jobs it writes by hand are no more than jobs it could
enqueue, and a forged ``deliver_callback`` job is refused by the worker (there is no
delivery record for it, and the producer cannot write one), so signatures stay meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

from mimoq.core import wire


@dataclass(frozen=True)
class AclUser:
    """One Redis user: its name and its rules, in ``ACL SETUSER`` syntax (no password)."""

    name: str
    rules: tuple[str, ...]
    purpose: str

    def setuser(self) -> str:
        """The ``ACL SETUSER`` command (quoted for redis-cli); add a password separately."""
        return "ACL SETUSER " + " ".join([self.name, *(_quote(r) for r in self.rules)])


def _quote(rule: str) -> str:
    return f"'{rule}'" if any(c in rule for c in "|*&%( ") else rule


#: The KEYS enqueue.lua declares (wire.enqueue_keys), as patterns.
_ENQUEUE_KEY_PATTERNS = (
    wire.ARQ_JOB_PREFIX + "*",
    wire.ARQ_RESULT_PREFIX + "*",
    wire.RESULT_PREFIX + "*",
    wire.QUEUE_NAME,
)


#: The channels results are announced on: workers publish, producers subscribe.
_DONE_CHANNELS = "&" + wire.DONE_CHANNEL_PREFIX + "*"


def producer_user(name: str = "mimoq-producer") -> AclUser:
    """Enqueue (the script), read results and job status; nothing else."""
    keys = (
        "~" + wire.ARQ_JOB_PREFIX + "*",  # the script writes the job and checks it exists
        "~" + wire.QUEUE_NAME,  # ... and scores it in the queue
        "~mimoq:wait:*",  # ... or, a bulk-lane job, in its model's wait lists
        "%R~" + wire.RESULT_PREFIX + "*",  # read results (and the script's existence check)
        "%R~" + wire.ARQ_RESULT_PREFIX + "*",
        "%R~" + wire.ARQ_IN_PROGRESS_PREFIX + "*",  # job status
        "%R~" + wire.FANOUT_PREFIX + "*",  # a long job's chunk plan (batch progress)
        "%R~" + wire.RUN_PREFIX + "*",  # a run's record (written through `runs` below)
        "%R~" + wire.INFLIGHT_KEY,  # a run's jobs in flight (`mimoq batch status`)
        "%R~" + wire.LIMITER_PREFIX + "*",  # the grant log a run's ETA is measured from
        "%R~" + wire.TENANT_HELD_PREFIX + "*",  # enqueue.lua: is the tenant held at its limit
        "%R~" + wire.USAGE_PREFIX + "*",  # GET /v1/usage, `mimoq usage`: read the totals
        "~" + wire.CANCEL_PREFIX + "*",  # cancel.lua marks a job cancelled
    )
    commands = (
        "-@all",
        "+evalsha", "+eval", "+script|load", "+script|exists",  # run enqueue.lua
        # what enqueue.lua calls, checked against this user's keys above:
        "+exists", "+time", "+set", "+zadd", "+zcard", "+rpush", "+sadd",
        "+get", "+mget", "+zscore", "+ping",  # results and status
        "+subscribe", "+unsubscribe",  # Producer.wait: told when a result is written
        # a run's status and ETA (`mimoq batch status`): reads only
        "+hget", "+hmget", "+hgetall", "+hkeys", "+scard", "+smismember", "+zrangebyscore",
        "+lrange", "+llen", "+smembers",
        # a usage report reads the windows and the usage journal in one transaction (a fold
        # moves entries between them atomically): the commands inside are checked as ever
        "+multi", "+exec",
        # cancel.lua (docs/cancel.md): reads, the marker, the stop message to workers
        "+pttl", "+publish", "+sscan", "+zrange",
    )  # fmt: skip
    # cancel.lua gives a cancelled job's admission places back: ZREM on the wait keys only
    # (never on the queue: a job cancelled by a producer goes to the queue's head, and a
    # worker records it as cancelled without calling MiMo).
    cancel_places = "(~mimoq:wait:* +zrem)"
    # Runs (mimoq.core.runs): enqueue.lua counts a job into its run, `mimoq batch` begins and
    # seals it. A selector grants these commands on the run keys alone (so ZREM, say, never
    # reaches the queue: a producer cannot withdraw someone else's job).
    runs = (
        "(~" + wire.RUN_PREFIX + "* ~" + wire.RUNS_ACTIVE_KEY + " +evalsha +eval +hincrby "
        "+hsetnx +hset +hdel +hget +hexists +hgetall +pexpire +sadd +scard +zadd +zrem +zrange)"
    )
    # A tenant's index of unfinished jobs (docs/cancel.md): enqueue.lua adds each job (and
    # renews the key's TTL, pruning expired ids, once an hour); a tenant cancel reads it and
    # prunes ids it found gone. ZREM there hides a job from a tenant cancel, never cancels it.
    tenant_jobs = (
        "(~" + wire.TENANT_JOBS_PREFIX + "* +zadd +pexpireat +zremrangebyscore +zrange +zrem)"
    )
    # EVAL/EVALSHA declare every key as read-write, so the script's call needs write access
    # to the result keys it only checks: a selector grants exactly that call (and no other
    # command) on those keys. Commands inside the script are checked against the rules
    # above again, where results are read-only.
    script_call = "(+evalsha +eval " + " ".join("~" + k for k in _ENQUEUE_KEY_PATTERNS) + ")"
    return AclUser(
        name,
        (
            "reset",
            "on",
            "resetchannels",
            _DONE_CHANNELS,
            "&" + wire.CANCEL_CHANNEL,
            *keys,
            *commands,
            script_call,
            runs,
            tenant_jobs,
            cancel_places,
        ),
        "producers: enqueue through enqueue.lua, cancel through cancel.lua, read results "
        "and status",
    )


def worker_user(name: str = "mimoq-worker") -> AclUser:
    """Everything under mimoq's and arq's keys, nothing administrative."""
    return AclUser(
        name,
        (
            "reset",
            "on",
            "resetchannels",
            _DONE_CHANNELS,  # the finish path publishes each result's status
            # heard by every worker: cancels of jobs it holds (worker/cancel_watch.py), and
            # changes of the paused accounts, which its breaker's scripts also publish
            "&" + wire.CANCEL_CHANNEL,
            "&" + wire.ACCOUNTS_CHANGED_CHANNEL,
            "~arq:*",
            "~mimoq:*",
            "+@all",
            "-@dangerous",
            "+info",  # arq logs the server's version at start-up
            "+scan",  # heartbeats and inspection (never KEYS)
        ),
        "workers (and operators' commands: inspect, callbacks, limits, batch --retry)",
    )


def users(prefix: str = "mimoq-") -> tuple[AclUser, AclUser]:
    """The producer and worker users, named ``<prefix>producer`` and ``<prefix>worker``."""
    return producer_user(prefix + "producer"), worker_user(prefix + "worker")
