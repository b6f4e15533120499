"""A local OTT Pay gateway that speaks PROTOCOL.md exactly, with seeded faults, for rehearsals and tests."""

from simulator.app import create_app
from simulator.main import run
from simulator.settings import Autopay, ConfigError, SimulatorSettings

__all__ = ["Autopay", "ConfigError", "SimulatorSettings", "create_app", "run"]
