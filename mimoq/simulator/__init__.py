"""A MiMo stand-in server (ASGI) for tests, benchmarks and the demo; see mimo-dialect.md."""

from mimoq.simulator.app import SimApp, SimulatedDisconnectError, create_app
from mimoq.simulator.config import SimConfig
from mimoq.simulator.faults import EmptyAudio, ErrorBodyStyle, Fault, FaultKind
from mimoq.simulator.state import SimState

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
