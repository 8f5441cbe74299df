"""The grader's tests import the `grader` package from the repository root, where `python -m grader` runs."""

import sys

from tests.support.stage import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
