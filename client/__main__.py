"""`python -m client`: the same as the `userqueue` command."""

import sys

from .cli import main

sys.exit(main())
