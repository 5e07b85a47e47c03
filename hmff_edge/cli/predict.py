"""`hmff-edge predict` (being written)."""
