"""`python -m devinterp.dashboard`: the same as `devinterp-dashboard`, whose app is devinterp.cli.dashboard."""
from devinterp.cli.dashboard import main

if __name__ == "__main__":
    main()
