"""The `ottrecon` subcommands that are more than starting a process: configuration checks, finance, payments."""
