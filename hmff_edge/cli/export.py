"""`hmff-edge export` (being written)."""
