"""Fixtures live in plugin modules under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.lambda_events",
    "tests.fixtures.proxy",
    "tests.fixtures.reporting",
    "tests.fixtures.stack",
]
