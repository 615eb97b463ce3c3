"""What ``mimoq --help`` says before the command list, and the examples after it.

Written for someone who has just installed mimoq: what it does, and one way to use each
way in. Developer notes belong in module docstrings, which argparse never shows.
"""

from __future__ import annotations

from typing import Final

DESCRIPTION: Final = """\
mimoq turns text into speech and speech into text with Xiaomi MiMo, for one sentence or a
whole archive. Jobs wait in a Redis queue; workers on any number of hosts call MiMo within
your account's quota, retry what can be retried, write each audio file or transcript to
storage (a folder or a bucket) and, if asked, POST a signed callback when it is done.
Without REDIS_URL everything runs in this one process: no Redis server needed."""

EPILOG: Final = """\
one example per way in:
  command line  mimoq speak "Hello there." --voice Mia --out hello.wav
                mimoq batch recordings/       (a folder, a .jsonl manifest or s3://bucket/dir/)
  Python        from mimoq import Producer, SpeechJob
                async with Producer.from_env() as producer:  # needs REDIS_URL
                    job = await producer.enqueue(SpeechJob(input="Hello.", voice="Mia"))
                    result = await producer.wait(job.job_id)
  Redis         redis-cli EVAL "$(cat mimoq/core/scripts/enqueue.lua)" 4 arq:job:42 arq:result:42 \\
                  mimoq:result:42 mimoq:queue 42 '{"kind": "speech", "input": "Hello."}'
  HTTP          mimoq serve, then (OpenAI's audio API):
                curl localhost:8080/v1/audio/speech -H "Authorization: Bearer $TOKEN" \\
                  -H 'Content-Type: application/json' -o hello.wav \\
                  -d '{"model": "tts-1", "input": "Hello.", "voice": "Mia"}'

No key yet? `mimoq demo` runs all of it against the bundled simulator. `mimoq doctor`
checks your keys; `mimoq COMMAND --help` explains each command; docs/ has the rest."""
