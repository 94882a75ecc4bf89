"""`python -m journey`: the same command line as the `journey` script."""

from journey.cli import main

main()
