"""`python -m devinterp.report`: the same as `devinterp-report`, whose app is devinterp.cli.report."""
from devinterp.cli.report import main

if __name__ == "__main__":
    main()
