"""Share of a MiMo-like quota turned into finished jobs, and 429s, with the limiter vs without.

    python bench/quota.py [--windows 6] [--window-s 10] [--rpm 100] [--tpm 10000]
                          [--latency-median-ms 1000] [--latency-sigma 0.6] [--poll-delay 0.05]
                          [--asr-audio-s 24] [--asr-spread 0] [--backlog 2] [--only NAME ...]
                          [--seed 1]

Time-compressed: MiMo's one-minute window becomes ``--window-s`` seconds, for the simulator
(``mimoq sim --quota-*``, sliding window: the strict one) and for the workers
(``MIMOQ_LIMIT_WINDOW_S``). One private redis-server and one simulator serve four
scenarios in turn, each with fresh ``mimoq worker`` processes, a flushed Redis and a
reset simulator:

- ``tts x1`` / ``tts x4``: speech jobs, limiter on, 1 and 4 worker processes;
- ``naive x4``: the same 4 workers with ``MIMOQ_LIMITS_ENABLED=false`` (every job just
  calls MiMo and retries a 429 with mimoq's backoff, scaled to the window);
- ``asr x4``: transcription jobs whose audio makes the token quota bind before the
  request quota.

Each worker's ``MIMOQ_CONCURRENCY`` comes from Little's law: the quota's call rate times
the planning latency (mean + 2 mean deviations of the simulator's lognormal latency),
split over the workers. The backlog (``--backlog`` times what the quota allows in the
run) is enqueued at t0, so the queue never runs dry. Window 1 is the ramp-up; windows
2..N are the steady interval: succeeded jobs per window (from the result records'
``finished_at``) over the binding quota, and the simulator's 429s (``GET /_sim/stats``)
sampled at the window boundaries.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _quota_fleet import Fleet, FleetSpec, stop_all
from _quota_measure import (
    HEADER,
    Finished,
    Row,
    admitted,
    concurrency_per_worker,
    lognormal_latency_s,
    per_window,
    status_count,
    table,
)
from _support import Service, default_target, run_bench
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.sim.audio_read import hear
from mimoq.sim.bodies import transcription_usage
from mimoq.worker.capacity import quota_request_rate
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig

#: Bytes of audio in every TTS answer (one second of 24 kHz mono): the bench is about
#: the quota, not about audio throughput.
TTS_AUDIO_BYTES = 48_000
ASR_SAMPLE_RATE = 8_000


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    workers: int
    limits: bool


SCENARIOS = (
    Scenario("tts x1", TTS_MODEL, 1, True),
    Scenario("tts x4", TTS_MODEL, 4, True),
    Scenario("naive x4", TTS_MODEL, 4, False),
    Scenario("asr x4", ASR_MODEL, 4, True),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--windows", type=int, default=6, help="windows per scenario (>= 2)")
    p.add_argument("--window-s", type=float, default=10.0, help="the compressed quota window")
    p.add_argument("--rpm", type=int, default=100, help="requests per window, each model")
    p.add_argument("--tpm", type=int, default=10_000, help="ASR tokens per window")
    p.add_argument("--latency-median-ms", type=float, default=1000.0)
    p.add_argument("--latency-sigma", type=float, default=0.6, help="lognormal sigma (tail)")
    p.add_argument("--poll-delay", type=float, default=0.05, help="MIMOQ_POLL_DELAY_S")
    p.add_argument("--asr-audio-s", type=float, default=24.0, help="seconds per ASR clip")
    p.add_argument(
        "--asr-spread",
        type=float,
        default=0.0,
        help="ASR clips of 5 lengths, from (1 - S) to (1 + S) x --asr-audio-s, in turn "
        "(0: one length); e.g. 0.9 for files as an archive has them",
    )
    p.add_argument("--backlog", type=float, default=2.0, help="jobs enqueued / quota of run")
    p.add_argument("--only", action="append", metavar="NAME", help="run only these scenarios")
    p.add_argument("--seed", type=int, default=1, help="the simulator's latency seed")
    args = p.parse_args(argv)
    if args.windows < 2:
        p.error("--windows must be at least 2 (window 1 is the ramp-up)")
    return args


def asr_clip(seconds: float) -> bytes:
    """A silent 8 kHz 16-bit mono WAV: small on the wire, long in audio tokens."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(ASR_SAMPLE_RATE)
        w.writeframes(b"\x00\x00" * round(seconds * ASR_SAMPLE_RATE))
    return out.getvalue()


@dataclass(frozen=True)
class Plan:
    """Everything fixed before the first scenario: the quota, the sizing, the inputs."""

    args: argparse.Namespace
    target: float
    latency_mean_s: float
    latency_dev_s: float
    asr_files: list[Path]  # the clips, used in turn
    asr_tokens: int  # what the simulator charges for one clip, on average over the clips

    def rate(self, model: str) -> float:
        """Calls per second the paced quota allows for ``model``."""
        a = self.args
        tokens = a.tpm if model == ASR_MODEL else None
        per_call = self.asr_tokens if model == ASR_MODEL else None
        return quota_request_rate(
            a.rpm, a.window_s, target=self.target, tokens_per_window=tokens,
            tokens_per_request=per_call,
        )  # fmt: skip

    def concurrency(self, scenario: Scenario) -> int:
        # The naive fleet gets the same slots as the limited one it is compared with.
        return concurrency_per_worker(
            self.rate(scenario.model), self.latency_mean_s, self.latency_dev_s, scenario.workers
        )

    def backlog(self, model: str) -> int:
        a = self.args
        jobs: float = self.rate(model) * a.windows * a.window_s * a.backlog
        return math.ceil(jobs) + 20

    def job(self, model: str, i: int) -> dict[str, Any]:
        if model == ASR_MODEL:
            clip = self.asr_files[i % len(self.asr_files)]
            return {"kind": "transcription", "model": model, "file": str(clip)}
        return {"kind": "speech", "model": model, "input": f"Quota bench, sentence {i}."}


def make_plan(args: argparse.Namespace, workdir: Path) -> Plan:
    spread = args.asr_spread
    lengths = [args.asr_audio_s]
    if spread > 0:
        lengths = [args.asr_audio_s * (1 - spread + spread * k / 2) for k in range(5)]
    asr_files: list[Path] = []
    charged: list[int] = []
    for n, seconds in enumerate(lengths):
        clip = asr_clip(seconds)
        asr_files.append(workdir / f"clip-{n}.wav")
        asr_files[-1].write_bytes(clip)
        heard = hear("audio/wav", clip)
        charged.append(int(transcription_usage(heard.duration_s, heard.transcript)["total_tokens"]))
    tokens = round(sum(charged) / len(charged))
    mean, dev = lognormal_latency_s(args.latency_median_ms / 1000, args.latency_sigma)
    target = default_target(args.window_s)
    return Plan(args, target, mean, dev, asr_files, tokens)


def sim_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--quota-rpm", str(args.rpm), "--quota-tpm", f"{ASR_MODEL}={args.tpm}",
        "--quota-window-s", f"{args.window_s:g}", "--quota-algorithm", "sliding_window",
        "--latency-median-ms", f"{args.latency_median_ms:g}",
        "--latency-sigma", f"{args.latency_sigma:g}", "--seed", str(args.seed),
        "--audio-bytes", str(TTS_AUDIO_BYTES),
    ]  # fmt: skip


async def read_finished(redis: ArqRedis) -> list[Finished]:
    """Every result record in Redis (SCAN, then MGET in batches)."""
    keys = [k async for k in redis.scan_iter(match=wire.RESULT_PREFIX + "*", count=1000)]
    out: list[Finished] = []
    for start in range(0, len(keys), 500):
        for raw in await redis.mget(keys[start : start + 500]):
            if raw is None:
                continue
            result = JobResult.model_validate_json(raw)
            total = (result.usage or {}).get("total_tokens")
            tokens = total if isinstance(total, int) else 0
            out.append(Finished(result.finished_at or 0.0, result.status == "succeeded", tokens))
    return out


async def run_scenario(
    scenario: Scenario, plan: Plan, fleet: Fleet, redis_svc: Service, sim: Service
) -> tuple[Row, dict[str, Any]]:
    """Fresh Redis, reset simulator, fresh workers; enqueue the backlog at t0; sample the
    simulator at every window boundary; stop the workers; read the result records."""
    a = plan.args
    settings = Settings(
        redis_url=redis_svc.url,
        mimo={"base_url": sim.url + "/v1"},
        limiter={"window_s": a.window_s},
        storage={"input_roots": str(fleet.workdir)},  # where the ASR clip is
    )
    redis = ArqRedis.from_url(redis_svc.url)
    http = httpx.AsyncClient(base_url=sim.url, timeout=10)
    try:
        await redis.flushall()
        (await http.post("/_sim/reset")).raise_for_status()
        spec = FleetSpec(
            redis_url=redis_svc.url, mimo_base_url=settings.base_url(),
            data_dir=fleet.workdir / scenario.name.replace(" ", "-"), window_s=a.window_s,
            concurrency=plan.concurrency(scenario), poll_delay_s=a.poll_delay,
            limits=scenario.limits,
        )  # fmt: skip
        workers = fleet.workers(scenario.workers, spec, scenario.name.replace(" ", "-"))
        try:
            producer = Producer(redis, settings)
            t0 = time.time()
            for i in range(plan.backlog(scenario.model)):
                await producer.enqueue(plan.job(scenario.model, i))
            samples: list[dict[str, Any]] = []
            for k in range(1, a.windows + 1):
                # a measuring interval on the wall clock, not a stand-in for synchronization
                await asyncio.sleep(max(0.0, t0 + k * a.window_s - time.time()))
                samples.append((await http.get("/_sim/stats")).json())
        finally:
            stop_all(workers)
        finished = await read_finished(redis)
        snapshot = None
        if scenario.limits:
            limiter = RedisLimiter(LimiterConfig.from_settings(settings), redis)
            snapshot = (await limiter.snapshot(scenario.model)).to_dict()
    finally:
        await http.aclose()
        await redis.aclose()
    jobs, tokens = per_window(finished, t0=t0, window_s=a.window_s, windows=a.windows)
    r429 = [status_count(s, 429) for s in samples]
    calls = [admitted(s, scenario.model) for s in samples]
    row = Row(
        name=scenario.name, workers=scenario.workers, concurrency=spec.concurrency,
        limits=scenario.limits, jobs=jobs, tokens=tokens, quota_requests=a.rpm,
        quota_tokens=a.tpm if scenario.model == ASR_MODEL else None,
        admitted_steady=calls[-1] - calls[0], rejected_steady=r429[-1] - r429[0],
        rejected_total=r429[-1],
        gave_up=sum(not f.succeeded for f in finished),
    )  # fmt: skip
    return row, {"sim": samples[-1], "limiter": snapshot}


def describe(plan: Plan) -> str:
    a = plan.args
    return (
        f"quota: {a.rpm} requests per {a.window_s:g} s window per model, {a.tpm} ASR tokens "
        f"per window, sliding window (simulator); limiter target {plan.target:g}\n"
        f"latency: lognormal, median {a.latency_median_ms:g} ms, sigma {a.latency_sigma:g} "
        f"(mean {plan.latency_mean_s:.2f} s, mean deviation {plan.latency_dev_s:.2f} s); "
        f"poll delay {a.poll_delay:g} s\n"
        f"ASR clip: {a.asr_audio_s:g} s (lengths spread {a.asr_spread:g}) = "
        f"{plan.asr_tokens} tokens a call on average, so "
        f"{a.tpm / plan.asr_tokens:.1f} calls per window fit the token quota "
        f"(vs {a.rpm} requests)\n"
        f"{a.windows} windows per scenario; steady = windows 2..{a.windows}"
    )


async def main_async(args: argparse.Namespace) -> int:
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    with tempfile.TemporaryDirectory(prefix="mimoq-quota-") as tmp, Fleet(Path(tmp)) as fleet:
        plan = make_plan(args, Path(tmp))
        print("$ python bench/quota.py " + " ".join(sys.argv[1:]))
        print(describe(plan), flush=True)
        redis_svc = fleet.redis()
        sim = fleet.simulator(*sim_flags(args))
        rows: list[Row] = []
        for scenario in chosen:
            print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
            row, detail = await run_scenario(scenario, plan, fleet, redis_svc, sim)
            rows.append(row)
            lim = detail["limiter"] or {}
            print(
                f"  {scenario.name}: sim max in flight {detail['sim'].get('max_in_flight')}, "
                f"limiter rate factor {lim.get('rate_factor', '-')}, 429s seen by the "
                f"limiter {lim.get('rate_limited_total', '-')}, latency EWMA "
                f"{lim.get('latency_ewma_s', '-')} s, tokens/audio s "
                f"{lim.get('tokens_per_audio_s', '-')}",
                file=sys.stderr, flush=True,
            )  # fmt: skip
    print()
    print(table([HEADER, *(r.cells() for r in rows)]))
    by_name = {r.name: r for r in rows}
    if "tts x4" in by_name and "naive x4" in by_name:
        limited, naive = by_name["tts x4"], by_name["naive x4"]
        print(
            f"\ntts x4 vs naive x4: share {limited.share:.1%} vs {naive.share:.1%} "
            f"(ratio {limited.share / max(naive.share, 1e-9):.3f}); 429s per success "
            f"{limited.per_success:.3f} vs {naive.per_success:.2f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
