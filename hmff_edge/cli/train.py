"""`hmff-edge train` (being written)."""
