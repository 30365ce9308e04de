"""`python -m testtime.cli ...`: the same app as the `testtime` script."""

from testtime.cli import app

app()
