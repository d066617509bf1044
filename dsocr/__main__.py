"""`python -m dsocr` runs the command line."""

from dsocr.cli import main

main()
