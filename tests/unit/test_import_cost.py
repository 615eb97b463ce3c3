"""Import cost: what a producer loads. Every ``mimoq`` process and every library user imports
the producer and its core modules; numpy (via fakeredis or the MP3 energy scan) is needed
only by the embedded Redis and by splitting audio, so those import it where they use it."""

from __future__ import annotations

from tests.support.cli import fresh_python

CODE = """
import sys
import mimoq, mimoq.core.connections, mimoq.core.sources, mimoq.producer.client
print(sorted(m for m in ("numpy", "fakeredis") if m in sys.modules))
"""


def test_the_producer_imports_neither_numpy_nor_fakeredis() -> None:
    assert fresh_python(CODE) == "[]"


def test_the_embedded_redis_still_works_with_its_lazy_import() -> None:
    code = (
        "import asyncio\n"
        "from mimoq.core.connections import embedded\n"
        "async def main():\n"
        "    r = embedded()\n"
        "    await r.set('k', 'v')\n"
        "    print((await r.get('k')).decode())\n"
        "    await r.aclose()\n"
        "asyncio.run(main())\n"
    )
    assert fresh_python(code) == "v"
