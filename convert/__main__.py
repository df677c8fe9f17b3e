"""``python -m convert``: see convert/cli.py and docs/convert.md."""

import sys

from convert.cli import main

if __name__ == "__main__":  # guarded: the conversion child process (spawn) re-imports this module
    sys.exit(main())
