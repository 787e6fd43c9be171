"""The one quick-mode switch shared by the examples.

``SKFLOWGEN_QUICK=1 python examples/NAME.py`` runs an example with tiny settings
(a couple of epochs, a few hundred rows), so that the test suite can check in
seconds that every example still runs; the numbers it prints then mean nothing.
"""

import os
from types import SimpleNamespace

QUICK = os.environ.get("SKFLOWGEN_QUICK") == "1"


def settings(full, quick):
    """The example's settings: ``full``, or ``full`` updated with ``quick`` in quick mode.

    Returns a namespace, so that an example reads ``cfg.max_iter``.
    """
    return SimpleNamespace(**{**full, **(quick if QUICK else {})})
