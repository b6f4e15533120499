"""Forward-only schema migrations, installed as the package ``ottrecon.sql`` (read by worker/migrations.py)."""
