"""The finance console: server-rendered pages on the api process for closing the books and on-call."""
