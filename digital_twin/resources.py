"""Where the files shipped with clustergym live: bundled traces (``data/``) and configs (``configs/``).

In a checkout (or an editable install) they are the repository's own folders. A wheel carries them
as package data of ``digital_twin._bundled`` (``setup.py`` maps the two folders there), found with
:mod:`importlib.resources`. Code never builds these paths from ``__file__`` itself: it asks here, so
that both work.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

BUNDLED_FOLDERS = ("data", "configs")
"""The repository folders a wheel ships (as ``digital_twin/_bundled/<folder>``)."""

_CHECKOUT = Path(__file__).resolve().parents[1]


@cache
def bundle_root() -> Path:
    """The folder that holds ``data/`` and ``configs/``.

    Returns:
        The installed package data (``.../site-packages/digital_twin/_bundled``) when present,
        else the checkout's root.
    """
    installed = resources.files("digital_twin").joinpath("_bundled")
    if installed.is_dir():
        # Wheels install unpacked, so the package data are plain files with a real path.
        return Path(str(installed))
    return _CHECKOUT


def bundled_path(relative: str | Path) -> Path:
    """A bundled file or folder, e.g. ``bundled_path("data/vmr2l_snapshots")``.

    Args:
        relative: a path under the repository root that starts with ``data/`` or ``configs/``.

    Returns:
        Its absolute path (which need not exist; callers report missing files themselves).

    Raises:
        ValueError: ``relative`` is absolute or lies outside ``data/`` and ``configs/``.
    """
    p = Path(relative)
    if p.is_absolute() or not p.parts or p.parts[0] not in BUNDLED_FOLDERS:
        raise ValueError(f"{str(relative)!r}: bundled paths start with one of {', '.join(BUNDLED_FOLDERS)}")
    return bundle_root() / p


def resolve_path(path: str | Path) -> Path:
    """A user-given path: as given if it exists (absolute, or relative to the working folder),
    else the bundled file of that relative name (so ``configs/...`` works from any folder)."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not p.parts or p.parts[0] not in BUNDLED_FOLDERS:
        return p
    bundled = bundled_path(p)
    return bundled if bundled.exists() else p
