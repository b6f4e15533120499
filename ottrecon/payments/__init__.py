"""Payments this system takes: intake, the submission state machine, the store, and the workers that carry them."""
