"""Suite-wide rules.

Tests that need root, network namespaces or system tools ask for them through
`tests.support.env.require`: on a developer laptop they skip with the reason; under
CI=true a missing requirement fails the test instead, so nothing can silently skip in CI.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("BERTH_TEST", "1")
