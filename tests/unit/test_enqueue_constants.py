"""enqueue.lua spells, once, numbers and names the Python side holds too (it must run on its
own, from redis-cli or any language): they must agree."""

from __future__ import annotations

import re

from mimoq.core import dialect_constants as dc
from mimoq.core import scripts, wire

SOURCE = scripts.source("enqueue")


def _lua_table(name: str) -> str:
    found = re.search(rf"^local {name} = (\{{.*?^\}}|\{{[^\n]*\}})", SOURCE, re.M | re.S)
    assert found, f"enqueue.lua has no table {name}"
    return found[1]


def test_the_interactive_cap_is_wires() -> None:
    found = re.search(r"^local INTERACTIVE_DIRECT = (\d+)$", SOURCE, re.M)
    assert found and int(found[1]) == wire.INTERACTIVE_DIRECT
    # and the script uses the name, never the number again
    assert "< INTERACTIVE_DIRECT" in SOURCE and "< 16" not in SOURCE


def test_the_models_are_the_dialects() -> None:
    models = _lua_table("MODELS")
    speech = re.search(r"speech = \{(.*?)\}", models)
    transcription = re.search(r"transcription = \{(.*?)\}", models)
    assert speech and transcription
    assert re.findall(r"\['([^']+)'\] = true", speech[1]) == list(dc.SPEECH_MODELS)
    assert re.findall(r"\['([^']+)'\] = true", transcription[1]) == [dc.ASR_MODEL]
    defaults = dict(re.findall(r"(\w+) = '([^']+)'", _lua_table("DEFAULT_MODEL")))
    assert defaults == {"speech": dc.TTS_MODEL, "transcription": dc.ASR_MODEL}
    # every other mention of a model in the script is in a comment
    code = "\n".join(line for line in SOURCE.splitlines() if not line.lstrip().startswith("--"))
    assert code.count("mimo-v2.5-") == len(dc.ALL_MODELS) + 2
