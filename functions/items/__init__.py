"""The `items` function."""
