"""`python -m devinterp.train`: the same as `devinterp-train`, whose app is devinterp.cli.train."""
from devinterp.cli.train import main

if __name__ == "__main__":
    main()
