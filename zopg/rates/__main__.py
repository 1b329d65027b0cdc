"""`python -m zopg.rates`: run the convergence-rate sweeps (see zopg.rates.run)."""

import sys

from zopg.rates.run import main

if __name__ == "__main__":
    sys.exit(main())
