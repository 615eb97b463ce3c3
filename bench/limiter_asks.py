"""How many times each job asked the limiter, and what it was told, from a MONITOR capture.

    python bench/limiter_asks.py FILE [--top 8]

``FILE`` is ``redis-cli MONITOR`` output, such as ``bench/redis_cost.py --monitor FILE``
writes for its mimoq phase. Each ``FCALL`` of the limiter's ``acquire`` is one ask; the call's
JSON argument names the job and its lane, its first key the model, and the commands the
call ran inside Redis (MONITOR prints them after it, marked ``lua``) say what it decided:

- ``G`` granted (the job's cancel marker set to ``granted``);
- ``T`` a ticket: a slot reserved, or moved, for the job (its marker set to ``ticket …``);
- ``P`` parked: the job put back in its tenant's waiting list (``LPUSH``);
- ``q`` deferred without a ticket of its own, its queue place moved (``ZADD … XX``);
- ``o`` anything else (a ticket holder early for its slot, the in-flight cap, a share
  wait, a cancel): nothing written.

Then, per lane, how many asks decided each letter; how many tickets a tenant's turn
dropped (over the interactive lane's share the displaced ticket is dropped, not moved) and
how many of their jobs that call parked there and then (not at an ask of their own); per
lane, the holders sent round arq's queue again (``q``) by what had last moved their tickets
(``sent_back``: a 429's re-plan, a tenant's turn, another job's ask, ...); how
many due holders the pace or the guard held back (``respaced``), per lane and
model how late ticket holders asked for their slots, at their grant (median, p90), and the
commands a job by the call that sent them (``by_call``: a script's call with the commands it
ran; ``--jobs N`` to divide by the jobs the capture ran, else by the jobs that asked).

Per lane and model: the jobs, the asks a job, the claims a job (each time a worker took
the job from arq's queue: ``arq_claim.lua`` setting its in-progress key and keeping it; a
pick that reads the job's input again), and the most frequent sequences ("TG": a ticket,
then the grant). A job that asked once and was granted is the floor; every other letter
is an ask more, and a ``T`` or ``P`` that the worker did not wait out in-process is a
claim more too (issue #22).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from mimoq.core import scripts

#: ``<time> [<db> <client>] "<command>" ...``: a MONITOR line
LINE = re.compile(r'^[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"(.*)$')
#: the model in a limiter key: ``mimoq:limit:{<account>:<model>}:state``
MODEL = re.compile(r"\{[^:}]+:([^}]+)\}")
#: a claim that took its job, as a script runs it (one that could not writes nothing)
CLAIMED = re.compile(r'^"SET" "arq:in-progress:([^"]+)"')
#: a claim that found its job not due takes its in-progress key back in the same script
TAKEN_BACK = re.compile(r'^"DEL" "arq:in-progress:([^"]+)"')
#: a due holder held back by the pace or the guard: its count, a field of the state's one
#: HSET at the call's end (before, an HINCRBY of the lanes hash; captures of either read)
RESPACED = re.compile(
    r'"HINCRBY" "[^"]*:lanes" "respaced:(\w+)"|^"HSET" "[^"]*:state" .*"c:respaced:(\w+)"'
)
#: a ticket given or moved: ``ZADD <lane>_tickets [flags] score member [score member ...]``
TICKETS = re.compile(r'^"ZADD" "[^"]*:(?:bulk|interactive)_tickets"(.*)$')
#: a grant's entry in the grant log: ``ZADD ...:log <time> <lease>``
LOGGED = re.compile(r'^"ZADD" "[^"]*:log" "([0-9.]+)"')
#: a tenant's turn (an ask's or an admission's), counted as RESPACED is
TURN = re.compile(r'^"HINCRBY" "[^"]*:lanes" "turns"|^"HSET" "[^"]*:state" .*"c:turns"')
#: a ticket taken out of its lane: ``ZREM <lane>_tickets <job>``
TICKET_GONE = re.compile(r'^"ZREM" "[^"]*:(bulk|interactive)_tickets" "([^"]+)"')
#: a job parked: put back at the head of its tenant's interactive waiting list
PARKED = re.compile(r'^"LPUSH" "[^"]*:interactive:tenant:[^"]*" "([^"]+)"')
#: the digest a limiter function's name ends with (its library's: ``limiter_acquire_<12 hex>``)
LIBRARY_DIGEST = re.compile(r"_[0-9a-f]{12}$")


@dataclass
class Ask:
    """One ``acquire``: the job, its lane and model, and the commands it ran inside Redis."""

    job: str
    lane: str
    model: str
    inner: list[str] = field(default_factory=list)

    def respaced(self) -> str | None:
        """Why the pace or the guard held this due holder back (``paced``, ``guard``), if so."""
        for command in self.inner:
            if (found := RESPACED.search(command)) is not None:
                return found.group(1) or found.group(2)
        return None

    def decision(self) -> str:
        """The letter of what it decided (see the module's docstring)."""
        text = "\n".join(self.inner)
        if '"granted"' in text:
            return "G"
        if '"ticket ' in text:
            return "T"
        if '"LPUSH"' in text:
            return "P"
        if '"ZADD" "mimoq:queue" "XX"' in text:
            return "q"
        return "o"


def _acquire(command: str, rest: str) -> Ask | None:
    """The ``acquire`` a client's command line is (its job, lane and model), or None."""
    if command.upper() != "FCALL" or not rest.startswith(' "limiter_acquire_'):
        return None
    args = shlex.split(rest)
    model = MODEL.search(args[2]) if len(args) > 2 else None
    try:
        call = json.loads(args[-1])
    except ValueError:
        return None  # not the limiter's acquire (its last argument is the call's JSON)
    if not isinstance(call, dict) or "job" not in call or model is None:
        return None
    return Ask(str(call["job"]), str(call.get("lane")), model.group(1))


def parsed(lines: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    """Each MONITOR line as (client, command, the rest): ``client`` is ``lua`` for a command
    a script ran, which MONITOR prints after the call that ran it."""
    for line in lines:
        if (match := LINE.match(line)) is not None:
            client, command, rest = match.groups()
            yield client, command, rest


def asks(lines: Iterable[str]) -> list[Ask]:
    """Every ``acquire`` of a MONITOR capture, in order, with the commands it ran."""
    found: list[Ask] = []
    current: Ask | None = None
    for client, command, rest in parsed(lines):
        if client == "lua":
            if current is not None:
                current.inner.append(f'"{command}"{rest}')
            continue
        current = _acquire(command, rest)
        if current is not None:
            found.append(current)
    # a call that ran nothing did not run: the library was not loaded yet ("Function not
    # found", then loaded and called again); every decision reads the limiter's state first
    return [ask for ask in found if ask.inner]


def claims(lines: Iterable[str]) -> Counter[str]:
    """How many times each job was taken from arq's queue, by job id: a claim's script sets
    the in-progress key (NX: a job held elsewhere ends it there), reads the queue score, and
    keeps the key (a job found not due: it deletes it). Captures of the claim before it set
    the key first (a GET, the score, then the SET) count alike."""
    taken: Counter[str] = Counter()
    # this script's: the job whose in-progress key it set, whether it read a queue score
    job: str | None = None
    scored = False

    def settle() -> None:
        if job is not None and scored:
            taken[job] += 1

    for client, name, rest in parsed(lines):
        if client != "lua":
            settle()
            job, scored = None, False
            continue
        command = f'"{name}"{rest}'
        if (claimed := CLAIMED.match(command)) is not None:
            job = claimed.group(1)
        elif command.startswith('"ZSCORE"'):
            scored = True
        elif TAKEN_BACK.match(command) is not None:
            job = None
    settle()
    return taken


def lateness(lines: Iterable[str]) -> dict[tuple[str, str], list[float]]:
    """Per (lane, model): how late each ticket holder asked for its slot, in seconds, at
    its grant: the grant's time in the log against the ticket's last time, whichever script
    gave or moved it (a re-plan moves them all). A grant without a ticket is not counted."""
    slot: dict[str, float] = {}
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    current: Ask | None = None
    for client, command, rest in parsed(lines):
        if client != "lua":
            current = _acquire(command, rest)
            continue
        text = f'"{command}"{rest}'
        if (moved := TICKETS.match(text)) is not None:
            words = [w for w in shlex.split(moved.group(1)) if w not in ("NX", "XX", "CH")]
            for at, job in zip(words[::2], words[1::2], strict=False):
                slot[job] = float(at)
        elif (logged := LOGGED.match(text)) and current is not None and current.job in slot:
            late = float(logged.group(1)) - slot.pop(current.job)
            out[(current.lane, current.model)].append(max(late, 0.0))
    return dict(out)


def decisions(found: Iterable[Ask]) -> dict[str, Counter[str]]:
    """Per lane: how many asks decided each letter."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for ask in found:
        out[ask.lane][ask.decision()] += 1
    return dict(out)


def turn_drops(lines: Iterable[str]) -> tuple[Counter[str], int]:
    """Per lane, the tickets a tenant's turn dropped: taken out of their lane by a call that
    counted a turn, each another job's than the one asking (an ask's own ticket leaves its
    lane at its grant); and how many of their jobs the same call parked. Returns (drops by
    lane, parked)."""
    drops: Counter[str] = Counter()
    parked = 0
    asking: str | None = None
    gone: list[tuple[str, str]] = []
    pushed: set[str] = set()
    turned = False

    def settle() -> None:
        nonlocal parked
        if not turned:
            return
        for lane, job in gone:
            if job != asking:
                drops[lane] += 1
                parked += job in pushed

    for client, command, rest in parsed(lines):
        if client != "lua":
            settle()
            ask = _acquire(command, rest)
            asking, gone, pushed, turned = (ask.job if ask else None), [], set(), False
            continue
        text = f'"{command}"{rest}'
        if TURN.match(text):
            turned = True
        elif (dropped := TICKET_GONE.match(text)) is not None:
            gone.append((dropped.group(1), dropped.group(2)))
        elif (lpushed := PARKED.match(text)) is not None:
            pushed.add(lpushed.group(1))
    settle()
    return drops, parked


#: a lane with its article, as ``sent_back`` names the lane of the ask that moved a ticket
LANE_WITH_ARTICLE = {"interactive": "an interactive", "bulk": "a bulk"}


def sent_back(lines: Iterable[str]) -> dict[str, Counter[str]]:
    """Per lane, the asks that sent a job round arq's queue again (``q``), by what had last
    moved its ticket: ``a 429's re-plan``, ``a tenant's turn`` (a call that counted one),
    another job's ask by its lane (``an interactive job's ask``: a jump to the head bulk
    ticket; ``a bulk job's ask``), ``its own ask``, or the script's name; or
    ``not moved`` (its ticket where the call that gave it put it). Such a holder entered the
    queue ``hold`` before its slot, was taken and waited for it in a worker, and the slot
    had moved meanwhile."""
    names = script_names()
    # the jobs holding a ticket, with what last moved it ("not moved": as it was given)
    writer: dict[str, str] = {}
    out: dict[str, Counter[str]] = defaultdict(Counter)
    name = ""
    ask: Ask | None = None
    # this call's ticket writes, in order: (job, True: given or moved; False: taken out)
    events: list[tuple[str, bool]] = []
    turned = False

    def settle() -> None:
        if ask is not None and ask.decision() == "q":
            out[ask.lane][writer.get(ask.job, "no ticket")] += 1
        label = name
        if turned:
            label = "a tenant's turn"
        elif name == "limiter_rate_limited":
            label = "a 429's re-plan"
        for job, added in events:
            if not added:
                writer.pop(job, None)
            elif job not in writer:
                writer[job] = "not moved"
            elif ask is not None and label == "limiter_acquire":
                lane = LANE_WITH_ARTICLE.get(ask.lane, "a")
                writer[job] = "its own ask" if job == ask.job else f"{lane} job's ask"
            else:
                writer[job] = label

    for client, command, rest in parsed(lines):
        if client != "lua":
            settle()
            ask, events, turned = _acquire(command, rest), [], False
            name = call_name(command, rest, names)
            continue
        text = f'"{command}"{rest}'
        if ask is not None:
            ask.inner.append(text)
        if TURN.match(text):
            turned = True
        elif (moved := TICKETS.match(text)) is not None:
            words = [w for w in shlex.split(moved.group(1)) if w not in ("NX", "XX", "CH")]
            events.extend((job, True) for job in words[1::2])
        elif TICKET_GONE.match(text) is not None:
            events.extend((job, False) for job in shlex.split(text)[2:])
    settle()
    return dict(out)


def script_names() -> dict[str, str]:
    """Each of mimoq's scripts by the SHA its ``EVALSHA`` names it by."""
    return {scripts.named(name).sha: name for name in scripts.SCRIPTS}


def call_name(command: str, rest: str, names: dict[str, str]) -> str:
    """What a client's command line calls: a script by its name (``names``: script_names),
    a limiter function by its own without its library's digest, any other command as
    ``plain:<COMMAND>``."""
    command = command.upper()
    words = rest.split('"')
    if command == "EVALSHA" and len(words) > 1:
        return names.get(words[1], words[1][:8])
    if command == "FCALL" and len(words) > 1:
        return LIBRARY_DIGEST.sub("", words[1])
    return f"plain:{command}"


def by_call(lines: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
    """The calls a capture's clients sent, by name, and the commands each kind cost: a
    script call with the commands it ran (a script by its name, a limiter function by its
    own without its library's digest), any other command on its own, by its name
    (``plain:ZREM``). Returns (calls, commands)."""
    names = script_names()
    calls: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    current = ""
    for client, command, rest in parsed(lines):
        if client == "lua":
            commands[current] += 1
            continue
        current = call_name(command, rest, names)
        calls[current] += 1
        commands[current] += 1
    return calls, commands


def by_lane(found: Iterable[Ask]) -> dict[tuple[str, str], Counter[str]]:
    """Per (lane, model): how many jobs asked in each sequence of decisions."""
    sequences: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for ask in found:
        sequences[(ask.lane, ask.model, ask.job)].append(ask.decision())
    out: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for (lane, model, _), letters in sequences.items():
        out[(lane, model)]["".join(letters)] += 1
    return dict(out)


def report(found: list[Ask], taken: Counter[str], top: int) -> list[str]:
    """One line per lane and model: its jobs, asks and claims a job (``taken``, from
    ``claims``) and its ``top`` commonest sequences."""
    jobs_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for ask in found:
        jobs_of[(ask.lane, ask.model)].add(ask.job)
    rows = []
    for (lane, model), sequences in sorted(by_lane(found).items()):
        jobs = sum(sequences.values())
        total = sum(len(s) * n for s, n in sequences.items())
        claimed = sum(taken[job] for job in jobs_of[(lane, model)])
        common = ", ".join(f"{s} {n}" for s, n in sequences.most_common(top))
        per_job = f"{total / jobs:5.2f} asks {claimed / jobs:5.2f} claims a job"
        rows.append(f"{lane:12s} {model:28s} {jobs:6d} jobs  {per_job}  {common}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="redis-cli MONITOR output (bench/redis_cost.py --monitor)")
    parser.add_argument("--top", type=int, default=8, help="sequences shown per lane and model")
    parser.add_argument(
        "--jobs", type=int, default=0, help="jobs the capture ran (default: the jobs that asked)"
    )
    args = parser.parse_args()
    with open(args.file, encoding="utf-8", errors="replace") as capture:
        lines = capture.readlines()
    found = asks(lines)
    print(f"{len(found)} asks")
    for row in report(found, claims(lines), args.top):
        print(row)
    for lane, letters in sorted(decisions(found).items()):
        print(f"{lane:12s} decisions: " + ", ".join(f"{k} {n}" for k, n in sorted(letters.items())))
    drops, parked = turn_drops(lines)
    if drops:
        by_lane = ", ".join(f"{lane} {n}" for lane, n in sorted(drops.items()))
        print(f"tickets a turn dropped: {by_lane}; their jobs parked by that call: {parked}")
    for lane, movers in sorted(sent_back(lines).items()):
        why = ", ".join(f"{m} {n}" for m, n in movers.most_common())
        print(f"{lane:12s} holders sent round arq's queue again, by what last moved the "
              f"ticket: {why}")  # fmt: skip
    held = Counter(r for ask in found if (r := ask.respaced()) is not None)
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(held.items()))
    print(f"due holders re-spaced: {reasons or 'none'}")
    for (lane, model), late in sorted(lateness(lines).items()):
        ms = sorted(x * 1000 for x in late)
        p50, p90 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(0.9 * len(ms)))]
        print(f"{lane:12s} {model:28s} holders late at their grant: {p50:.1f} ms median, "
              f"{p90:.1f} ms p90 ({len(ms)} holders)")  # fmt: skip
    jobs = args.jobs or len({ask.job for ask in found})
    if jobs:
        calls, commands = by_call(lines)
        total = sum(commands.values())
        print(f"commands a job by the call that sent them ({jobs} jobs): {total / jobs:.1f} in all")
        for name, n in commands.most_common(args.top * 2):
            print(f"  {name:36s} {calls[name] / jobs:6.2f} calls {n / jobs:6.2f} commands a job")


if __name__ == "__main__":
    main()
