"""Where a redis-server's CPU goes, by kind of work (``redis_cost.py --profile``).

``perf record`` samples the server process (user space only: the kernel's share is
``INFO cpu``'s ``used_cpu_sys``); its samples are grouped by what the function they fell in
does. Redis's own Lua interpreter is linked in statically and exports only its API, so a
sample in one of its internal functions (``luaV_execute``, the table code) shows as a bare
address: it counts as Lua when the exported function nearest below it is the interpreter's
(its files are linked as one block); any other bare address counts as other.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final


@dataclass(frozen=True)
class Kind:
    """A kind of work, and how its functions are named: a name starting with one of
    ``prefixes`` or containing one of ``parts``."""

    name: str
    prefixes: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()

    def matches(self, symbol: str) -> bool:
        return symbol.startswith(self.prefixes) or any(p in symbol for p in self.parts)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: Kinds of work, in the order they are reported.
KINDS: Final = (
    # the interpreter, and the libraries Redis gives scripts (cjson, cmsgpack, bit)
    Kind("Lua", prefixes=_words("lua strbuf_ json_ mp_ table_is_ memrevif")),
    # a double printed (%.17g: glibc's multi-precision path) or parsed
    Kind(
        "float <-> text",
        parts=_words(
            "strtod strtold printf_fp vfprintf snprintf mpn_ to_mpn hack_digit round_and_return"
            " d2string fpconv string2d string2ld"
        ),
    ),
    Kind(
        "key and command lookups",
        prefixes=_words("dict siphash lookupKey lookupCommand"),
        parts=("strcasecmp",),
    ),
    Kind(
        "memory",
        prefixes=("je_",),
        parts=_words("malloc free realloc zcalloc memmove memcpy memset"),
    ),
    Kind("sorted sets and listpacks", prefixes=_words("zzl zsl zset zadd zrange zrem lp")),
    Kind(
        "client I/O and protocol",
        prefixes=_words(
            "read write epoll processMultibulk processInline processInput addReply _addReply"
            " connSocket beforeSleep afterSleep __GI___libc_read __GI___libc_write"
        ),
    ),
    # what every command costs around its own work, whoever sends it (a client, a script)
    Kind(
        "running a command",
        prefixes=_words(
            "call processCommand createEmbeddedStringObject createStringObject createObject"
            " decrRefCount stringObjectLen getStringObjectLen moduleCount"
            " moduleCallCommandFilters script fcallGetCommandFlags ACLCheck"
            " replicationFeedMonitors slowlogPushEntryIfNeeded parseReply gettimeofday"
            " clock_gettime __vdso_"
        ),
    ),
    Kind("latency tracking", prefixes=("hdr_",)),
)
OTHER = "other"

_REPORT = ("perf", "report", "--stdio", "--no-children", "-n", "--sort", "dso,sym", "-g", "none")
# "     6.58%           589  redis-check-rdb       [.] dictFind"
_ROW = re.compile(r"^\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(\S+)")


class ProfileUnavailable(RuntimeError):
    """``perf`` cannot sample the server here; the message says why and what would fix it."""


@dataclass(frozen=True)
class SymbolTable:
    """A binary's exported functions, by address, to name a bare address in a report."""

    addresses: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_nm(cls, text: str) -> SymbolTable:
        """From ``nm -D --defined-only`` output (``<hex address> <type> <name>``)."""
        rows = sorted(
            (int(parts[0], 16), parts[2])
            for parts in (line.split() for line in text.splitlines())
            if len(parts) == 3 and parts[1] in "TtWw"
        )
        return cls(tuple(a for a, _ in rows), tuple(n for _, n in rows))

    def nearest_below(self, address: int) -> str | None:
        i = bisect.bisect_right(self.addresses, address) - 1
        return self.names[i] if i >= 0 else None


def kind_of(symbol: str) -> str:
    # glibc's internal aliases (__GI___printf_fp_l) name the same function
    name = symbol.removeprefix("__GI_").lstrip("_")
    for kind in KINDS:
        if kind.matches(name) or kind.matches(symbol):
            return kind.name
    return OTHER


def shares(report: str, binary_dso: str, symbols: SymbolTable) -> tuple[dict[str, float], int]:
    """Each kind's share (%) of the samples in ``perf report -n --sort dso,sym`` output,
    and the samples counted. A bare address in ``binary_dso`` is named by ``symbols``."""
    counts: dict[str, int] = {}
    total = 0
    for line in report.splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        samples, dso, symbol = int(row[1]), row[2], row[3]
        kind = kind_of(symbol)
        if symbol.startswith("0x") and dso == binary_dso:
            # Only the interpreter's block is all one kind: a bare address among Redis's own
            # files is a static function of any of them, not the exported one below it.
            below = symbols.nearest_below(int(symbol, 16))
            kind = "Lua" if below is not None and kind_of(below) == "Lua" else OTHER
        counts[kind] = counts.get(kind, 0) + samples
        total += samples
    order = [k.name for k in KINDS] + [OTHER]
    return {k: 100 * counts[k] / total for k in order if k in counts}, total


def perf_problem() -> str | None:
    """Why ``perf`` cannot sample a process of this user here, or None."""
    if shutil.which("perf") is None:
        return "--profile needs perf (Debian: apt-get install linux-perf)"
    try:
        paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    except (OSError, ValueError):
        return None
    if paranoid > 2:
        return (
            f"--profile needs kernel.perf_event_paranoid <= 2 (it is {paranoid}): "
            "sysctl -w kernel.perf_event_paranoid=2"
        )
    return None


class ServerProfile:
    """``perf record`` of one redis-server process, from its making to ``stop``."""

    def __init__(self, pid: int, data: Path, *, frequency: int = 4000) -> None:
        problem = perf_problem()
        if problem is not None:
            raise ProfileUnavailable(problem)
        self._data = data
        # the binary, read now: the server may have exited by the time the report is made
        self._binary = Path(os.path.realpath(f"/proc/{pid}/exe"))
        cmd = ["perf", "record", "-q", "-e", "cpu-clock:u", "-F", str(frequency)]
        self._perf = subprocess.Popen(
            [*cmd, "-p", str(pid), "-o", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> tuple[dict[str, float], int]:
        """Stop sampling; each kind's share (%) of the server's samples, and their count."""
        self._perf.send_signal(signal.SIGINT)
        _, err = self._perf.communicate(timeout=60)
        if self._perf.returncode not in (0, -signal.SIGINT) or not self._data.exists():
            raise ProfileUnavailable(f"perf record failed: {err.decode(errors='replace')[-400:]}")
        report = subprocess.run(
            [*_REPORT, "-i", str(self._data)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        nm = subprocess.run(
            ["nm", "-D", "--defined-only", str(self._binary)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return shares(report, self._binary.name, SymbolTable.from_nm(nm))


def summary(kinds: dict[str, float], samples: int) -> str:
    parts = ", ".join(f"{kind} {share:.0f}%" for kind, share in kinds.items())
    return f"redis-server CPU by kind of work (--profile, perf, {samples} samples): {parts}"
