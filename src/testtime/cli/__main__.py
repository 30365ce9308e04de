"""`python -m testtime.cli ...`: the same app as the `testtime` script."""

import sys

from testtime.cli import app

sys.exit(app())
