"""`python -m silk ...`: the `silk` console script."""

from silk.console import main

main()
