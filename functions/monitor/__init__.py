"""The `monitor` function."""
