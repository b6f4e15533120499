"""Composition root of the simulator process: environment in, a running gateway on SIM_HOST:SIM_PORT out."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from aiohttp import web

from simulator.app import create_app
from simulator.settings import ConfigError, SimulatorSettings


def run(env: Mapping[str, str]) -> int:
    """Run the simulator in the foreground until SIGINT/SIGTERM; return the exit code.

    Returns 2 (after printing every problem to stderr) when the configuration is invalid, 1 when
    the port cannot be bound, 0 after a clean stop. Binds 127.0.0.1 unless SIM_HOST says
    otherwise: it holds sign keys and fakes payments, so it is not for public interfaces.
    """
    try:
        settings = SimulatorSettings.from_env(env)
    except ConfigError as exc:
        print(f"ottpay simulator: {exc}", file=sys.stderr)
        return 2
    url = f"http://{settings.host}:{settings.port}/processV2"
    print(f"OTT Pay simulator: {url} for {', '.join(settings.merchants)}, seed {settings.seed}", file=sys.stderr)
    try:
        web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    except OSError as exc:  # most often: the port is taken
        print(f"ottpay simulator: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
