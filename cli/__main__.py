"""`python -m streamctl.cli` (used by `streamctl up --detach` to start the supervisor)."""

from streamctl.cli.entry import main

main()
