"""Benchmarks that print numbers: receiver vs bare aiohttp, worker vs bare arq (docs/BENCHMARKS.md)."""
