"""A MiMo stand-in server (ASGI) for tests, benchmarks and the demo.

It follows docs/mimo-dialect.md.
"""

from mimoq.sim.faults import EmptyAudio, ErrorBodyStyle, Fault, FaultKind
from mimoq.sim.sim_app import SimApp, SimulatedDisconnectError, create_app
from mimoq.sim.sim_config import SimConfig
from mimoq.sim.state import SimState

__all__ = [
    "EmptyAudio",
    "ErrorBodyStyle",
    "Fault",
    "FaultKind",
    "SimApp",
    "SimConfig",
    "SimState",
    "SimulatedDisconnectError",
    "create_app",
]
