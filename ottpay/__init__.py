"""The OTT Pay payment protocol: envelope crypto, messages, codes, keys, errors, and the async client (its only I/O).

Import the submodule you need (`from ottpay.messages import parse_cents`): this package loads
nothing on its own, so that a process without keys (the api) never loads the cipher by importing it.
"""
