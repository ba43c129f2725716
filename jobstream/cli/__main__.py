"""`python -m jobstream.cli`: the command line, as the `jobstream` script runs it."""

from jobstream.cli import main

main()
