"""ottrecon: OTT Pay callbacks in, a reconciled payment ledger out."""
