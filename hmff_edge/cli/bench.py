"""`hmff-edge bench` (being written)."""
