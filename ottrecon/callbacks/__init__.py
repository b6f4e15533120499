"""Callbacks from OTT Pay: verdicts, verification, storage, replay, dead letters and retention."""
