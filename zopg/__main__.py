"""`python -m zopg`: the same command line as the `zopg` script."""

import sys

from zopg.cli import main

if __name__ == "__main__":
    sys.exit(main())
