"""``python -m danlu_worker``: see :mod:`danlu_worker.main`."""

import sys

from danlu_worker.main import main

sys.exit(main())
