"""`python -m tests.support.cli ARGS`: the keyturn CLI with the test plugins registered."""

from __future__ import annotations

from keyturn import plugins
from keyturn.cli.main import main
from tests.support.flaky import FlakyTarget

plugins.register("target", FlakyTarget)

if __name__ == "__main__":
    main()
