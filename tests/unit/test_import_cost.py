"""Import cost: what a producer loads. Every ``mimoq`` process and every library user imports
the producer and its core modules; numpy (via fakeredis or the MP3 energy scan) is needed
only by the embedded Redis and by splitting audio, so those import it where they use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import sys
import mimoq, mimoq.core.connections, mimoq.core.sources, mimoq.producer.client
print(sorted(m for m in ("numpy", "fakeredis") if m in sys.modules))
"""


def test_the_producer_imports_neither_numpy_nor_fakeredis() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.stdout.strip() == "[]", out.stderr


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
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.stdout.strip() == "v", out.stderr
