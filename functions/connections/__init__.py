"""The `connections` function."""
