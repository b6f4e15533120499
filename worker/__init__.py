"""arq workers: verify, de-duplicate and record OTT Pay callbacks in Postgres."""
