"""What Redis keeps per finished job: the delivery record with its body kept (the previous
layout) against the ended record without it, side by side in one run.

    python bench/redis_memory.py [--jobs 2000] [--workers 2] [--concurrency 32] [--seed 1]
                                 [--rpm 400] [--no-limiter]

One private redis-server, ``mimoq sim`` and a callback receiver (answers 204), each in its
own process, and ``--workers`` ``mimoq worker`` processes. The jobs are
``bench/redis_cost.py``'s mix (80 % speech, 15 % transcription, 2 % long texts split into
chunk jobs, 3 % refused by MiMo; 3 tenants, both lanes), half of them with a callback.

1. A warm-up of 50 jobs (scripts loaded, limiter keys made), not counted.
2. ``INFO memory`` ``used_memory`` before; the N jobs enqueued; the run waits until every
   job has its result, every callback was delivered and the queue is empty; ``used_memory``
   after. ``MEMORY USAGE`` of every key, grouped by family. The workers stay connected
   (idle) through every reading, so their connections weigh the same in each.
3. **previous layout**: each delivery record of the run is rewritten as the previous
   version kept it once delivered (its body, rebuilt from the result record byte for
   byte, and every default field), TTL kept; ``used_memory`` and ``MEMORY USAGE`` again.

Per finished job = (after - before) / N, of ``used_memory`` and of ``used_memory_dataset``
(without Redis's own overhead, which grows in steps: client buffers, the keyspace's tables;
use N >= 2000 for figures that do not depend on where a step falls). Both layouts hold the
same jobs, results and history; only the delivery records differ.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import redis as sync_redis
from _quota_fleet import Fleet, stop_all
from _support import Service, callbacks_received, run_sync_bench
from redis_cost import (
    REFUSE_MARK,
    ResultsWatch,
    add_mix_arguments,
    enqueue_mimoq,
    mix,
    mix_settings,
    write_clip,
)

from mimoq.core import deliveries, wire
from mimoq.core.finish import callback_body
from mimoq.core.jobs import JobResult
from mimoq.core.webhooks import Delivery

WARMUP_JOBS = 50
DONE_TIMEOUT_S = 900.0
KB = 1024


def used_memory(client: sync_redis.Redis) -> tuple[int, int]:
    """``used_memory`` and ``used_memory_dataset`` (the same less Redis's own overhead:
    client buffers, scripts, the keyspace's fixed part): the dataset is what jobs add."""
    info = client.info("memory")
    return int(info["used_memory"]), int(info["used_memory_dataset"])


def family(key: str) -> str:
    """``mimoq:result:job-7`` -> ``mimoq:result:*``: the key with its id left out."""
    for prefix in (
        wire.RESULT_PREFIX,
        wire.DELIVERY_PREFIX,
        wire.DEAD_LETTER_PREFIX,
        wire.ARQ_JOB_PREFIX,
        wire.FANOUT_PREFIX,
    ):
        if key.startswith(prefix):
            return prefix + "*"
    return key if key.count(":") < 3 else ":".join(key.split(":")[:3]) + ":*"


def key_usage(client: sync_redis.Redis) -> dict[str, tuple[int, int]]:
    """family -> (keys, bytes by MEMORY USAGE, every element counted)."""
    usage: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        size = client.memory_usage(key, samples=0) or 0
        usage[family(key)][0] += 1
        usage[family(key)][1] += size
    return {name: (count, size) for name, (count, size) in usage.items()}


def wait_done(
    client: sync_redis.Redis,
    receiver: Service,
    ids: list[str],
    expected_callbacks: int,
    received0: int,
) -> list[str]:
    """Every result final, every callback delivered, the queue empty; problems if not.
    ``received0``: the receiver's count before these jobs were enqueued."""
    deadline = time.monotonic() + DONE_TIMEOUT_S
    watch = ResultsWatch(ids)
    while True:
        final, pending = watch.poll(client)
        queued = int(client.zcard(wire.QUEUE_NAME))
        if final == len(ids) and pending == 0 and queued == 0:
            break
        if time.monotonic() > deadline:
            return [f"{final} of {len(ids)} results, {pending} callbacks pending, {queued} queued"]
        time.sleep(0.5)  # the interval between polls of the results (not a sync stand-in)
    # the delivery jobs' own arq keys are gone once arq marked them done
    while any(client.exists(wire.job_key(wire.callback_job_id(i))) for i in ids[-50:]):
        if time.monotonic() > deadline:
            return ["delivery jobs still present"]
        time.sleep(0.1)
    delivered = callbacks_received(receiver) - received0
    return [] if delivered >= expected_callbacks else [f"{delivered} of {expected_callbacks}"]


def previous_layout(client: sync_redis.Redis, ids: list[str]) -> int:
    """Rewrite each ended delivery record of ``ids`` as the previous version kept it (body
    and defaults included), keeping its TTL; returns how many were rewritten."""
    rewritten = 0
    for job_id in ids:
        delivery_id = wire.callback_job_id(job_id)
        raw, ttl_ms = (
            client.get(deliveries.key(delivery_id)),
            client.pttl(deliveries.key(delivery_id)),
        )
        result_raw = client.get(wire.result_key(job_id))
        if raw is None or result_raw is None:
            continue
        delivery = Delivery.model_validate_json(raw)
        if delivery.body is not None:
            continue
        body = callback_body(JobResult.model_validate_json(result_raw), delivery_id)
        old = delivery.model_copy(update={"body": body}).model_dump(mode="json")
        client.set(deliveries.key(delivery_id), wire.dumps(old), px=max(1, ttl_ms))
        rewritten += 1
    return rewritten


def result_fat(client: sync_redis.Redis, ids: list[str]) -> dict[str, float]:
    """Mean bytes per result record of ``ids``: its JSON, and parts of it that are fat
    (``"name":null`` pairs, ``output.path`` where it only repeats ``output.url``, MiMo's
    ``usage`` passed through)."""
    totals: dict[str, float] = defaultdict(float)
    records = [r for r in client.mget([wire.result_key(i) for i in ids]) if r is not None]
    for raw in records:
        record = json.loads(raw)
        totals["json"] += len(raw)
        totals["nulls"] += sum(len(f'"{k}":null,') for k, v in _pairs(record) if v is None)
        output = record.get("output") or {}
        if output.get("url", "").endswith(output.get("path") or "\0"):
            totals["path"] += len(wire.dumps({"path": output["path"]})) - 1
        totals["usage"] += len(wire.dumps(record.get("usage")))
    return {k: v / max(1, len(records)) for k, v in totals.items()}


def _pairs(value: object) -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [(k, v) for k, v in value.items()] + [p for v in value.values() for p in _pairs(v)]
    return []


def run(args: argparse.Namespace, fleet: Fleet, workdir: Path) -> int:
    redis = fleet.redis()
    faults = json.dumps([{"kind": "status", "status": 400, "match": REFUSE_MARK, "times": None}])
    sim = fleet.simulator("--faults", faults, "--seed", str(args.seed))
    receiver = fleet.receiver()
    client = sync_redis.Redis.from_url(redis.url)
    data_dir = workdir / "data"
    data_dir.mkdir()
    clip = workdir / "clip.wav"
    write_clip(clip)
    rng = random.Random(args.seed)
    hook = receiver.url + "/hook"
    warmup = mix(WARMUP_JOBS, rng, clip, hook)
    for job in warmup:
        job["id"] = "warm-" + job["id"]
    jobs = mix(args.jobs, rng, clip, hook)
    with_callback = sum("callback" in j for j in jobs)
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    settings, spec = mix_settings(args, redis.url, sim, data_dir, workdir, secret)
    workers = fleet.workers(args.workers, spec, "worker")
    try:
        asyncio.run(enqueue_mimoq(redis.url, settings, warmup))
        problems = wait_done(client, receiver, [j["id"] for j in warmup], 0, 0)
        before, received0 = used_memory(client), callbacks_received(receiver)
        asyncio.run(enqueue_mimoq(redis.url, settings, jobs))
        ids = [j["id"] for j in jobs]
        problems += wait_done(client, receiver, ids, with_callback, received0)
        # Read with the workers still connected (idle), as "before" was: their connections'
        # buffers are part of used_memory, and must not count as a job's.
        new_used, new_keys = used_memory(client), key_usage(client)
        fat = result_fat(client, ids)
        rewritten = previous_layout(client, ids)
        old_used, old_keys = used_memory(client), key_usage(client)
    finally:
        stop_all(workers)
        client.close()
    report(args, with_callback, rewritten, before, (old_used, old_keys), (new_used, new_keys))
    print(
        f"result record JSON, mean {fat['json']:.0f} B, of which: null fields "
        f"{fat['nulls']:.0f} B, output.path repeating output.url {fat['path']:.0f} B, "
        f"MiMo's usage {fat['usage']:.0f} B"
    )
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


Usage = tuple[tuple[int, int], dict[str, tuple[int, int]]]


def report(
    args: argparse.Namespace,
    with_callback: int,
    rewritten: int,
    before: tuple[int, int],
    old: Usage,
    new: Usage,
) -> None:
    n = args.jobs
    print(
        f"{n} finished jobs ({with_callback} with a callback, {rewritten} delivery records "
        f"rewritten to the previous layout), {args.workers} `mimoq worker` x "
        f"{args.concurrency}, limiter on; 80/15/2/3 % speech/asr/long/refused"
    )
    print(
        f"{'layout':<22}{'used_memory/job':>16}{'dataset/job':>13}"
        f"{'per result':>12}{'per delivery':>14}"
    )
    per_job: list[tuple[float, float]] = []
    for name, ((used, dataset), keys) in (
        ("previous (body kept)", old),
        ("new (ended: no body)", new),
    ):
        per_job.append(((used - before[0]) / n, (dataset - before[1]) / n))
        result = keys.get(wire.RESULT_PREFIX + "*", (0, 0))
        delivery = keys.get(wire.DELIVERY_PREFIX + "*", (0, 0))
        print(
            f"{name:<22}{per_job[-1][0] / KB:>13.2f} KB{per_job[-1][1] / KB:>10.2f} KB"
            f"{result[1] / max(1, result[0]):>10.0f} B{delivery[1] / max(1, delivery[0]):>12.0f} B"
        )
    (old_used, old_set), (new_used, new_set) = per_job
    print(
        f"new / previous per finished job: used_memory {new_used / old_used:.2f}x, "
        f"dataset {new_set / old_set:.2f}x"
    )
    print("new layout, MEMORY USAGE by key family (keys, bytes per finished job):")
    for name, (count, size) in sorted(new[1].items(), key=lambda kv: -kv[1][1])[:6]:
        print(f"  {name:<36}{count:>8}{size / n:>10.0f} B")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The mix's options, as ``redis_cost.py`` has them (``mix_settings`` reads them all)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_mix_arguments(parser, jobs=2000)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="mimoq-memory-") as tmp, Fleet(Path(tmp)) as fleet:
        return run(args, fleet, Path(tmp))


if __name__ == "__main__":
    sys.exit(run_sync_bench(main))
