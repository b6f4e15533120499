"""One simulated gateway instance: the parts that the protocol endpoint and the /sim endpoints share."""

from __future__ import annotations

import asyncio

from aiohttp import web

from simulator.background import Background
from simulator.callbacks import CallbackSender
from simulator.faults import Dice
from simulator.gateway import Gateway
from simulator.settings import SimulatorSettings
from simulator.signkeys import HeldKeys
from simulator.state import SimState


class Simulator:
    """Settings, memory, held sign keys, the seeded dice, background jobs, the callback sender and the gateway."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.state = SimState()
        self.keys = HeldKeys(settings.merchants)
        self.dice = Dice(settings.seed)
        self.background = Background()
        self.sender = CallbackSender(settings, self.keys, self.dice, self.background)
        self.gateway = Gateway(settings, self.state, self.dice, self.background, self.sender)
        # Set on shutdown so that responses held back by the timeout fault end at once.
        self.stopping = asyncio.Event()

    async def reset(self) -> None:
        """Cancel pending callbacks and jobs, forget every order, hold the configured keys again and restart
        the dice from the seed."""
        await self.background.cancel_all()
        self.state.clear()
        self.keys.reset()
        self.dice.reseed()


SIM = web.AppKey("simulator", Simulator)
