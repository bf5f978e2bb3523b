"""`python -m clipq`: the same as the clipq command."""

import sys

from clipq.cli import main

sys.exit(main())
