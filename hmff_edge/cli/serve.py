"""`hmff-edge serve` (being written)."""
