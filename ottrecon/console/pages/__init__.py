"""The console's pages, one module per page (handlers and the SQL they read)."""
