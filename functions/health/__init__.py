"""The `health` function."""
