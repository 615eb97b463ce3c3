"""``bench/redis_cost.py --profile``: a redis-server's CPU by kind of work, from ``perf``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis as sync_redis

from tests.conftest import start_redis_server
from tests.support.bench_scripts import load_bench

profiling = load_bench("_server_profile")

# What `perf report -n --sort dso,sym` prints, cut down: named functions of glibc, jemalloc
# and the server, and bare addresses inside the server's binary.
REPORT = """\
# Samples: 1K of event 'cpu-clock:u'
# Overhead       Samples  Shared Object         Symbol
#
    20.00%           200  redis-check-rdb       [.] 0x0000000000152700
    10.00%           100  redis-check-rdb       [.] 0x0000000000140010
    15.00%           150  libc.so.6             [.] __GI___printf_fp_l
     5.00%            50  libc.so.6             [.] str_to_mpn.part.0.constprop.0
    25.00%           250  redis-check-rdb       [.] dictFind
    10.00%           100  libjemalloc.so.2      [.] malloc_usable_size
    10.00%           100  redis-check-rdb       [.] hdr_record_values
     5.00%            50  redis-check-rdb       [.] luaRedisGenericCommand
"""

# `nm -D --defined-only`: the interpreter's API from 0x1525c0, a Redis function below it
NM = """\
00000000001525c0 T lua_checkstack
0000000000152660 T lua_xmove
0000000000140000 T quicklistBookmarksClear
0000000000173bc0 T hdr_value_at_index
                 U malloc
0000000000266258 B redis_tls_ctx
"""


def test_samples_are_grouped_by_kind_and_bare_addresses_count_only_inside_the_interpreter() -> None:
    kinds, samples = profiling.shares(REPORT, "redis-check-rdb", profiling.SymbolTable.from_nm(NM))
    assert samples == 1000
    assert kinds == {
        # the bare address above lua_xmove and the script glue named in the report
        "Lua": 25.0,
        "float <-> text": 20.0,
        "key and command lookups": 25.0,
        "memory": 10.0,
        "latency tracking": 10.0,
        # above quicklistBookmarksClear: some static function of Redis's, not that one
        "other": 10.0,
    }
    assert list(kinds) == [k for k in kinds if k != "other"] + ["other"]  # the report's order


def test_a_shared_library_address_is_never_named_by_the_servers_symbols() -> None:
    report = "    100.00%     7  libc.so.6     [.] 0x0000000000152700\n"
    kinds, samples = profiling.shares(report, "redis-check-rdb", profiling.SymbolTable.from_nm(NM))
    assert (kinds, samples) == ({"other": 100.0}, 7)


@pytest.mark.redis
def test_a_live_server_doing_float_scores_shows_the_lua_and_the_float_printing(
    tmp_path: Path,
) -> None:
    """The same Lua loop of ZADD and ZSCORE, with scores of epoch seconds (17 digits each way)
    and then with whole numbers: the first spends a larger share on float <-> text."""
    if (problem := profiling.perf_problem()) is not None:
        pytest.skip(problem)
    server = start_redis_server()
    client = sync_redis.Redis.from_url(server.url)
    loop = """
    for i = 1, tonumber(ARGV[1]) do
      local score = tonumber(ARGV[2]) + i * tonumber(ARGV[3])
      redis.call('ZADD', KEYS[1], score, 'm' .. (i % 64))
      tonumber(redis.call('ZSCORE', KEYS[1], 'm' .. (i % 64)))
    end
    return 1
    """
    sha = client.script_load(loop)
    pid = int(client.info("server")["process_id"])
    try:
        measured = {}
        for name, base, step in (("epoch", "1796623686.4838121", "0.0012345"), ("whole", "1", "1")):
            try:
                profile = profiling.ServerProfile(pid, tmp_path / f"{name}.perf")
            except profiling.ProfileUnavailable as exc:
                pytest.skip(str(exc))
            for _ in range(20):
                client.evalsha(sha, 1, f"z:{name}", 5000, base, step)
            try:
                measured[name] = profile.stop()
            except profiling.ProfileUnavailable as exc:  # perf here, but not allowed to sample
                pytest.skip(str(exc))
    finally:
        client.close()
        server.close()
    (epoch, epoch_n), (whole, whole_n) = measured["epoch"], measured["whole"]
    assert epoch_n > 100 and whole_n > 100  # samples enough for a share to mean something
    assert epoch["Lua"] > 2 and whole["Lua"] > 2  # the interpreter, named though stripped
    assert sum(epoch.values()) == pytest.approx(100)
    assert epoch["float <-> text"] > 2 * whole.get("float <-> text", 0.0)
