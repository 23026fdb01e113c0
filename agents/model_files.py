"""Where a saved agent's model file is: the one rule every ``agent:PATH`` follows.

``train.py`` writes ``runs/<run>/best/`` and ``last/`` (``model.zip`` for SB3, ``model.pt`` for
MAPPO / IPPO); ``train.py ship`` copies one of them into ``models/<problem>/<name>/``. A path may
name the file itself, such a model folder, or a run folder (its ``best/`` first, then ``last/``).
"""

from __future__ import annotations

from pathlib import Path


MODEL_FILES = ("model.zip", "model.pt")
"""What train.py saves: an SB3 zip, or MAPPO / IPPO's state dicts."""


def resolve_model_path(path: str | Path, name: str | tuple[str, ...] = "model.zip") -> Path:
    """The model file ``path`` names: the file itself, ``path/<name>``, ``path/best/<name>`` or
    ``path/last/<name>``, tried in that order (a file given without ``name``'s suffix gets it, as
    ``MaskablePPO.load`` does). With several names (e.g. :data:`MODEL_FILES`) each folder is tried
    for each name before the next folder.

    Raises:
        FileNotFoundError: nothing there; the message lists the places tried.
    """
    path = Path(path)
    names = (name,) if isinstance(name, str) else tuple(name)
    if path.is_file():
        return path
    if path.is_dir():
        tried = [folder / n for folder in (path, path / "best", path / "last") for n in names]
        for candidate in tried:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{path}: no {' or '.join(names)} there, nor in best/ or last/ "
                                f"(agent model not found in folder: tried {', '.join(map(str, tried))})")
    for n in names:
        suffix = Path(n).suffix
        if path.suffix != suffix and path.with_name(path.name + suffix).is_file():
            return path.with_name(path.name + suffix)
    raise FileNotFoundError(
        f"agent model not found: {path} (give a {' or '.join(names)}, a run folder or its best/ or last/ folder)")
