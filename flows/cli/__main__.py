"""`python -m flows.cli`: the `lvm` command."""

from flows.cli import main

main()
