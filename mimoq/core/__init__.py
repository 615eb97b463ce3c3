"""The core layer: settings, the job contract, the wire format, the MiMo dialect, audio and storage.

Imports nothing from `mimoq.worker`, `mimoq.producer`, `mimoq.cli` or `mimoq.sim`.
"""
