"""Where VM-rescheduling episodes come from: real snapshot files or Azure V1 replays.

A source is called with the env's random generator and returns a fresh
:class:`~digital_twin.vm.snapshot.Snapshot` for one episode (Jumanji's ``Generator`` pattern). Each
source carries a ``split`` label; :func:`check_disjoint` refuses a training and a held-out source
that could hand out the same data (the same file, or the same Azure trace split).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from digital_twin.resources import bundled_path, resolve_path
from digital_twin.vm.azure_replay import HostSpec, replay
from digital_twin.vm.snapshot import Snapshot, SnapshotConsistencyWarning, load_snapshot
from digital_twin.vm.vmr2l_like import MIXES, _check_range, generate_snapshot

REAL_SNAPSHOTS = bundled_path("data/vmr2l_snapshots")


class SnapshotSource(Protocol):
    """Hands out one snapshot per episode."""

    split: str

    def __call__(self, rng: np.random.Generator) -> Snapshot: ...

    def identity(self) -> set[str]:
        """Tokens naming the data this source can hand out (two disjoint sources share none)."""
        ...

    def restart(self) -> None:
        """Forget buffered snapshots, so that the next call depends only on the generator it is given."""
        ...


def _file_token(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class FileSource:
    """Snapshots from VMR2L-schema files, one drawn per episode (uniformly, seeded).

    Files are parsed once and copied per episode, so a reset costs a copy, not a parse.
    """

    paths: Sequence[str | Path]
    split: str = "train"
    _cache: dict[Path, Snapshot] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.paths = [resolve_path(p) for p in self.paths]
        if not self.paths:
            raise ValueError("FileSource needs at least one snapshot file")
        for p in self.paths:
            if not p.is_file():
                raise FileNotFoundError(f"snapshot file not found: {p}")

    def _load(self, path: Path) -> Snapshot:
        if path not in self._cache:
            with warnings.catch_warnings():
                # The real files' memory quirk is reported once by the loader's report, not per episode.
                warnings.simplefilter("ignore", SnapshotConsistencyWarning)
                self._cache[path] = load_snapshot(path)
        return self._cache[path]

    def __call__(self, rng: np.random.Generator, path: Path | None = None) -> Snapshot:
        """A copy of a file drawn with ``rng``, or of ``path`` (one of :attr:`paths`) when given."""
        if path is None:
            path = self.paths[int(rng.integers(len(self.paths)))] if len(self.paths) > 1 else self.paths[0]
        return self._load(path).copy()

    def identity(self) -> set[str]:
        return {_file_token(p) for p in self.paths}

    def restart(self) -> None:
        pass  # stateless apart from the parse cache


@dataclass
class FixedSource:
    """Copies of snapshots already in memory, one drawn per episode (uniformly, seeded).

    For tests, and for training or planning on snapshots built in code; its identity is the
    snapshots' object ids, so it never collides with a file or trace source.
    """

    snapshots: Sequence[Snapshot]
    split: str = "train"

    def __post_init__(self) -> None:
        if isinstance(self.snapshots, Snapshot):
            self.snapshots = [self.snapshots]
        if not self.snapshots:
            raise ValueError("FixedSource needs at least one snapshot")

    def __call__(self, rng: np.random.Generator) -> Snapshot:
        index = int(rng.integers(len(self.snapshots))) if len(self.snapshots) > 1 else 0
        return self.snapshots[index].copy()

    def identity(self) -> set[str]:
        return {f"memory:{id(s)}" for s in self.snapshots}

    def restart(self) -> None:
        pass


@dataclass
class AzureReplaySource:
    """Fresh snapshots replayed from the Azure V1 trace (``split`` ``"dev"`` or ``"test"``).

    One replay pass (about a second for 236 hosts) cuts ``cuts_per_replay`` snapshots at random
    fractions of the trace span in ``fraction_range``; episodes consume them, then a new replay
    with a new seed follows. Every episode thus gets a different snapshot.
    """

    split: str = "dev"
    num_hosts: int = 236
    fraction_range: tuple[float, float] = (0.6, 1.0)
    cuts_per_replay: int = 16
    target_utilisation: float = 0.85
    host: HostSpec = field(default_factory=HostSpec)
    _queue: list[Snapshot] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.split not in ("dev", "test"):
            raise ValueError(f"AzureReplaySource split must be 'dev' or 'test', got {self.split!r}")
        lo, hi = self.fraction_range
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"fraction_range must satisfy 0 < lo <= hi <= 1, got {self.fraction_range}")

    def __call__(self, rng: np.random.Generator) -> Snapshot:
        if not self._queue:
            seed = int(rng.integers(2**31 - 1))
            fractions = np.sort(rng.uniform(*self.fraction_range, size=self.cuts_per_replay))
            result = replay(self.split, num_hosts=self.num_hosts, fractions=fractions.tolist(), seed=seed,
                            target_utilisation=self.target_utilisation, host=self.host)
            order = rng.permutation(len(result.clusters))
            self._queue = [Snapshot.from_clusters([result.clusters[i]]) for i in order]
        return self._queue.pop()

    def identity(self) -> set[str]:
        return {f"azure_v1:{self.split}"}

    def restart(self) -> None:
        self._queue.clear()


@dataclass
class VMR2LLikeSource:
    """Fresh VMR2L-like snapshots (:mod:`digital_twin.vm.vmr2l_like`): the real files' host spec
    and type mixes, the Azure V1 trace's churn (``split`` ``"dev"`` or ``"test"``).

    Each call generates one snapshot of ``num_clusters`` clusters (uniform integer, both ends
    included) of ``hosts_range`` hosts each, sharing one mix drawn from ``mixes``, each filled to a
    CPU utilisation drawn from ``utilisation_range`` and cut at a fraction of the trace span drawn
    from ``fraction_range``, with a ``random_fit`` placement chance drawn from ``random_fit_range``
    and a ``spread_fit`` one from ``spread_fit_range`` (defaults ``(0, 0)``: best fit); all from
    the env's generator. Its identity is the trace split,
    as for :class:`AzureReplaySource`, so a ``dev`` source and a ``test`` one never share data.
    """

    split: str = "dev"
    hosts_range: tuple[int, int] = (100, 400)
    num_clusters: tuple[int, int] = (1, 2)
    utilisation_range: tuple[float, float] = (0.75, 0.95)
    fraction_range: tuple[float, float] = (0.5, 0.95)
    mixes: tuple[str, ...] = ("clear2", "clear_big2")
    warmup_s: float | None = 86400.0
    random_fit_range: tuple[float, float] = (0.0, 0.0)
    spread_fit_range: tuple[float, float] = (0.0, 0.0)
    host: HostSpec = field(default_factory=HostSpec)

    def __post_init__(self) -> None:
        if self.split not in ("dev", "test"):
            raise ValueError(f"VMR2LLikeSource split must be 'dev' or 'test', got {self.split!r}")
        self.hosts_range = tuple(int(x) for x in self.hosts_range)  # type: ignore[assignment]
        self.num_clusters = tuple(int(x) for x in self.num_clusters)  # type: ignore[assignment]
        self.utilisation_range = tuple(float(x) for x in self.utilisation_range)  # type: ignore[assignment]
        self.fraction_range = tuple(float(x) for x in self.fraction_range)  # type: ignore[assignment]
        self.random_fit_range = tuple(float(x) for x in self.random_fit_range)  # type: ignore[assignment]
        self.spread_fit_range = tuple(float(x) for x in self.spread_fit_range)  # type: ignore[assignment]
        self.mixes = tuple(self.mixes)
        unknown = [m for m in self.mixes if m not in MIXES]
        if unknown or not self.mixes:
            raise ValueError(f"mixes must name type mixes among {sorted(MIXES)}, got {list(self.mixes)}")
        # Validate the ranges once, here, rather than at the first episode.
        _check_range("hosts_range", self.hosts_range, 1, None)
        _check_range("num_clusters", self.num_clusters, 1, None)
        _check_range("utilisation_range", self.utilisation_range, 0.0, 1.0, open_low=True)
        _check_range("fraction_range", self.fraction_range, 0.0, 1.0)
        _check_range("random_fit_range", self.random_fit_range, 0.0, 1.0)
        _check_range("spread_fit_range", self.spread_fit_range, 0.0, 1.0)

    def __call__(self, rng: np.random.Generator) -> Snapshot:
        snap, _ = generate_snapshot(
            rng, self.split, hosts_range=self.hosts_range, num_clusters=self.num_clusters,
            utilisation_range=self.utilisation_range, fraction_range=self.fraction_range,
            mixes=self.mixes, warmup_s=self.warmup_s, host=self.host, random_fit_range=self.random_fit_range,
            spread_fit_range=self.spread_fit_range,
        )
        return snap

    def identity(self) -> set[str]:
        return {f"azure_v1:{self.split}"}

    def restart(self) -> None:
        pass  # nothing buffered: each call depends only on the generator


def make_source(spec: dict[str, Any] | SnapshotSource) -> SnapshotSource:
    """A source from a config mapping (``kind: files``, ``azure`` or ``vmr2l_like``) or an existing source.

    Examples (YAML)::

        {kind: files, paths: [data/vmr2l_snapshots/reset_vm_pm_id_clear2.json], split: eval}
        {kind: azure, split: dev, num_hosts: 236, fraction_range: [0.6, 1.0]}
        {kind: vmr2l_like, split: dev, hosts_range: [100, 400], utilisation_range: [0.75, 0.95]}
    """
    if not isinstance(spec, dict):
        return spec
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind == "files":
        return FileSource(paths=spec.pop("paths"), split=spec.pop("split", "train"), **spec)
    if kind == "azure":
        if "fraction_range" in spec:
            spec["fraction_range"] = tuple(spec["fraction_range"])
        if "host" in spec and isinstance(spec["host"], dict):
            spec["host"] = HostSpec(**spec["host"])
        return AzureReplaySource(**spec)
    if kind == "vmr2l_like":
        if "host" in spec and isinstance(spec["host"], dict):
            spec["host"] = HostSpec(**spec["host"])
        return VMR2LLikeSource(**spec)
    raise ValueError(f"unknown snapshot source kind {kind!r}: expected 'files', 'azure' or 'vmr2l_like'")


def check_disjoint(train: SnapshotSource, held_out: SnapshotSource, names: tuple[str, str] = ("training", "held-out")) -> None:
    """Raise if two sources (by default the training and a held-out one) could hand out the same data."""
    shared = train.identity() & held_out.identity()
    if shared:
        raise ValueError(
            f"{names[0]} source ({train.split}) and {names[1]} source ({held_out.split}) share data: {sorted(shared)}"
        )


SOURCE_KEYS = ("train_source", "val_source", "eval_source")


def load_vm_config(path: str | Path) -> dict[str, Any]:
    """Read a VM-rescheduling config (YAML): ``env`` kwargs, ``train_source``, ``eval_source`` and
    an optional ``val_source``.

    ``path`` may name a bundled config (``configs/vm_rescheduling/...``) from any folder.

    ``val_source`` is what training evaluates on to pick its ``best`` model, so that the
    evaluation files stay unseen until ``evaluate.py``. The sources are checked to be pairwise
    disjoint (:func:`check_disjoint`).
    """
    import yaml

    path = resolve_path(path)
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for key in ("train_source", "eval_source"):
        if key not in config:
            raise ValueError(f"{path}: missing required key {key!r}")
    unknown = set(config) - {"env", *SOURCE_KEYS, "description"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} (expected env, {', '.join(SOURCE_KEYS)}, description)")
    sources = {k: make_source(config[k]) for k in SOURCE_KEYS if k in config}
    names = {"train_source": "training", "val_source": "validation", "eval_source": "evaluation"}
    keys = list(sources)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            check_disjoint(sources[a], sources[b], (names[a], names[b]))
    config["path"] = str(path)
    return config
