"""Every integration test runs against the migrated local stack, through the pooler."""

from __future__ import annotations

import pytest

from infra.local_stack import LocalStack


@pytest.fixture(autouse=True)
def _through_the_pooler(database: LocalStack) -> LocalStack:
    return database
