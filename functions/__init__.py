"""The Lambda functions; each `<name>/handler.py` is one function's entry point."""
