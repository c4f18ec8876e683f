"""`python -m o2o.suite ...` (see o2o/suite/cli.py)."""

import sys

from o2o.suite.cli import main

sys.exit(main())
