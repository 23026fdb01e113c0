"""Where numba caches compiled kernels: one folder for every ``@njit(cache=True)`` of the project.

``$NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/clustergym/numba`` (``~/.cache/...``): not next
to the source, since an installed package may be read-only and a checkout stays clean. numba
reads the folder when each cached kernel first compiles, so importing this module before the
``@njit`` decorators run is enough.
"""

from __future__ import annotations

import os

import numba

if not os.environ.get("NUMBA_CACHE_DIR"):
    numba.config.CACHE_DIR = os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "clustergym", "numba")
