from __future__ import annotations

import pytest

from tests.report.crafted import Craft
from tests.support.keyturn import Harness


@pytest.fixture
def craft(kt: Harness) -> Craft:
    return Craft(kt.app)
