"""`python -m warden.cli ...`: the `warden` command, for a Python without the entry point on PATH
(the demo starts its twin this way). Nothing but the call."""
from . import main

main()
