"""The public edge: receives OTT Pay callbacks and queues them; holds no keys and no database."""
