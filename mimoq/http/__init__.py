"""The HTTP front door: OpenAI-compatible audio endpoints and job status, backed by the queue.

A layer of its own: it imports ``mimoq.core`` and ``mimoq.producer`` and nothing above;
only ``mimoq.cli`` (the composition root) imports it. It never holds the MiMo key: jobs go
through Redis to the workers like any producer's.
"""
