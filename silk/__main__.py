"""`python -m silk ...`: the `silk` console script."""

from silk.console import main

if __name__ == "__main__":
    main()
