from __future__ import annotations

import pytest

# The API's fixtures (an API over three credentials, a token per role) for the /metrics tests.
from tests.api.conftest import _flaky_plugin, api  # noqa: F401
from tests.report.crafted import Craft
from tests.support.keyturn import Harness


@pytest.fixture
def craft(kt: Harness) -> Craft:
    return Craft(kt.app)
