"""`python -m lienthong.node` runs the `lienthong` command."""

from .cli import main

main()
