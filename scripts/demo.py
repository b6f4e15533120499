"""`make demo`: the whole service against a faulty OTT Pay simulator, proving no payment is charged twice.

A thin entry point: the demo itself lives in scripts/demo_parts (run as `python scripts/demo.py`,
this directory is first on sys.path, so the package imports by its bare name).
"""

from __future__ import annotations

from demo_parts.main import main

if __name__ == "__main__":
    raise SystemExit(main())
