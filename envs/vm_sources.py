"""Where VM-rescheduling episodes come from: real snapshot files or Azure V1 replays.

A source is called with the env's random generator and returns a fresh
:class:`~digital_twin.vm.snapshot.Snapshot` for one episode (Jumanji's ``Generator`` pattern). Each
source carries a ``split`` label; :func:`check_disjoint` refuses a training and a held-out source
that could hand out the same data (the same file, or the same Azure trace split). Each also says
how large its snapshots can get (:meth:`SnapshotSource.max_size`), which the env's padding follows
unless a config fixes it.

This module is also the home of the VM-rescheduling config schema (:func:`load_vm_config`,
:func:`make_source`): the top-level keys, the keys of each source kind (the source class's own
fields) and, through :func:`envs.vm_rescheduling.check_env_options`, the ``env`` section (the env
constructor's own parameters). ``evaluate.py``, ``train.py``, :func:`~envs.vm_rescheduling.make_vm_env`
and ``gym.make`` all check a config here, so a typo is named the same way everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from digital_twin.cli import ConfigError, UsageError, check_keys, did_you_mean, read_yaml
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

    def max_size(self) -> tuple[int, int]:
        """``(hosts, VMs)`` that no snapshot of this source exceeds (over all its clusters together):
        exact for files and fixed snapshots, a capacity bound for generated ones."""
        ...


def _vms_per_host_bound(host: HostSpec, smallest_cpu: int, smallest_mem_mb: float) -> int:
    """The most VMs one host can hold: its capacity over the smallest VM's request (vCPU and memory)."""
    return int(min(host.cpu // max(int(smallest_cpu), 1), host.mem_mb // max(float(smallest_mem_mb), 1.0)))


def _size(snapshot: Snapshot) -> tuple[int, int]:
    return sum(c.num_hosts for c in snapshot.clusters), sum(c.num_vms for c in snapshot.clusters)


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

    def max_size(self) -> tuple[int, int]:
        sizes = [_size(self._load(p)) for p in self.paths]  # parsed once: the episodes reuse the parse
        return max(h for h, _ in sizes), max(v for _, v in sizes)


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

    def max_size(self) -> tuple[int, int]:
        sizes = [_size(s) for s in self.snapshots]
        return max(h for h, _ in sizes), max(v for _, v in sizes)


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
        for name in ("num_hosts", "cuts_per_replay"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.target_utilisation <= 1.0:
            raise ValueError(f"target_utilisation must be in (0, 1], got {self.target_utilisation}")

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

    def max_size(self) -> tuple[int, int]:
        from digital_twin.vm.azure_trace import AzureV1Trace

        trace = AzureV1Trace.load(self.split)  # cached: the replays parse the same files
        per_host = _vms_per_host_bound(self.host, int(trace.flavour_cpu.min()), float(trace.flavour_mem_mb.min()))
        return self.num_hosts, self.num_hosts * per_host


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

    def max_size(self) -> tuple[int, int]:
        types = [t for m in self.mixes for t in MIXES[m].vm_types]
        per_host = _vms_per_host_bound(self.host, min(t.request_cpu for t in types), min(t.request_mem_mb for t in types))
        hosts = self.hosts_range[1] * self.num_clusters[1]
        return hosts, hosts * per_host


@dataclass
class ProductionLikeSource:
    """Snapshots shaped like issue #12's production file, with anti-affinity deployment sets.

    Each call is :func:`digital_twin.vm.deployment_sets.production_like_snapshot` with a seed from
    the env's generator: two clusters of ``hosts`` hosts (2 x 44-vCPU hosts, the ``clear_big2``
    VM shapes, Azure V1 churn of trace ``split``), 150 host-level and 15 rack-level sets per
    cluster that the starting placement satisfies, and ``maximum_migration`` as the file's budget.
    Generating one takes a few seconds (the trace replay). Its identity is the trace split.
    """

    split: str = "test"
    hosts: tuple[int, int] = (254, 1010)
    maximum_migration: int | None = 10

    def __post_init__(self) -> None:
        if self.split not in ("dev", "test"):
            raise ValueError(f"ProductionLikeSource split must be 'dev' or 'test', got {self.split!r}")
        self.hosts = tuple(int(x) for x in self.hosts)  # type: ignore[assignment]
        if min(self.hosts) < 1:
            raise ValueError(f"hosts must be at least 1 per cluster, got {list(self.hosts)}")
        if self.maximum_migration is not None and self.maximum_migration < 1:
            raise ValueError(f"maximum_migration must be at least 1 or null, got {self.maximum_migration}")

    def __call__(self, rng: np.random.Generator) -> Snapshot:
        from digital_twin.vm.deployment_sets import production_like_snapshot

        return production_like_snapshot(int(rng.integers(2**31 - 1)), hosts=self.hosts, split=self.split,
                                        maximum_migration=self.maximum_migration)

    def identity(self) -> set[str]:
        return {f"azure_v1:{self.split}"}

    def restart(self) -> None:
        pass  # nothing buffered: each call depends only on the generator

    def max_size(self) -> tuple[int, int]:
        types = MIXES["clear_big2"].vm_types
        per_host = _vms_per_host_bound(HostSpec(), min(t.request_cpu for t in types),
                                       min(t.request_mem_mb for t in types))
        return sum(self.hosts), sum(self.hosts) * per_host


SOURCE_KINDS: dict[str, type] = {"files": FileSource, "azure": AzureReplaySource, "vmr2l_like": VMR2LLikeSource,
                                 "production_like": ProductionLikeSource}
"""``kind:`` of a source mapping -> its class; the mapping's other keys are the class's fields."""


def source_keys(kind: str) -> list[str]:
    """The keys a source mapping of ``kind`` takes: ``kind`` and its class's public fields."""
    return ["kind", *(f.name for f in dataclasses.fields(SOURCE_KINDS[kind]) if not f.name.startswith("_"))]


def _value(where: str, name: str, value: Any, annotation: str) -> Any:
    """``value`` checked against a source field's annotation (a string: this module uses postponed
    annotations) and converted to it; YAML gives lists where the fields hold tuples."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where}: {name} must be {what}, got {value!r}")

    def number(x: Any, integer: bool) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return False
        return float(x).is_integer() if integer else math.isfinite(x)

    if value is None:
        if "None" in annotation:
            return None
        raise bad(annotation.replace(" | None", "") if annotation != "HostSpec" else "a mapping")
    if annotation == "HostSpec":
        check_keys(where, value, [f.name for f in dataclasses.fields(HostSpec)], prefix=f"{name}.")
        return HostSpec(**{k: _value(where, f"{name}.{k}", v, _field_types(HostSpec)[k]) for k, v in value.items()})
    if annotation.startswith("tuple["):
        inner = annotation[len("tuple["):-1]
        if not isinstance(value, (list, tuple)):
            raise bad(f"a list ({inner})")
        if inner.endswith(", ..."):  # tuple[str, ...]
            if not all(isinstance(x, str) for x in value):
                raise bad("a list of names")
            return tuple(value)
        kinds = [k.strip() for k in inner.split(",")]
        if len(value) != len(kinds) or not all(number(x, k == "int") for x, k in zip(value, kinds)):
            raise bad(f"a list of {len(kinds)} {'integers' if kinds[0] == 'int' else 'numbers'}, e.g. [lo, hi]")
        return tuple(int(x) if k == "int" else float(x) for x, k in zip(value, kinds))
    base = annotation.replace(" | None", "")
    if base == "int" and not number(value, integer=True):
        raise bad("an integer")
    if base == "float" and not number(value, integer=False):
        raise bad("a number")
    if base == "str" and not isinstance(value, str):
        raise bad("a string")
    return int(value) if base == "int" else float(value) if base == "float" else value


def _field_types(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


def make_source(spec: dict[str, Any] | SnapshotSource, where: str = "source") -> SnapshotSource:
    """A source from a config mapping (``kind: files``, ``azure`` or ``vmr2l_like``) or an existing source.

    Every key is checked against the kind's class (:data:`SOURCE_KINDS`, :func:`source_keys`), and
    every value against its field's type.

    Examples (YAML)::

        {kind: files, paths: [data/vmr2l_snapshots/reset_vm_pm_id_clear2.json], split: eval}
        {kind: azure, split: dev, num_hosts: 236, fraction_range: [0.6, 1.0]}
        {kind: vmr2l_like, split: dev, hosts_range: [100, 400], utilisation_range: [0.75, 0.95]}

    Args:
        spec: the mapping, or a source (returned as it is).
        where: what to name in messages, e.g. ``"configs/x.yaml: eval_source"``.

    Raises:
        ConfigError: an unknown kind or key, a value of the wrong type or range, a missing file.
    """
    if not isinstance(spec, dict):
        if callable(spec) and hasattr(spec, "split"):
            return spec
        raise ConfigError(f"{where}: expected a mapping with kind ({', '.join(SOURCE_KINDS)}) or a snapshot source, "
                          f"got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in SOURCE_KINDS:
        said = "no kind" if kind is None else f"unknown kind {kind!r}{did_you_mean(str(kind), SOURCE_KINDS)}"
        raise ConfigError(f"{where}: {said}; kind must be one of {', '.join(SOURCE_KINDS)}")
    cls = SOURCE_KINDS[kind]
    allowed = source_keys(kind)
    check_keys(where, spec, allowed, section=f"a source of kind {kind}")
    types = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "kind":
            continue
        if cls is FileSource and key == "paths":
            paths = [value] if isinstance(value, str) else value
            if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
                raise ConfigError(f"{where}: paths must be a non-empty list of snapshot files, got {value!r}")
            kwargs[key] = paths
        elif cls is FileSource and key == "split":
            kwargs[key] = _value(where, key, value, "str")
        else:
            kwargs[key] = _value(where, key, value, types[key])
    if cls is FileSource and "paths" not in kwargs:
        raise ConfigError(f"{where}: a source of kind files needs paths: [snapshot files]")
    try:
        return cls(**kwargs)
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_disjoint(train: SnapshotSource, held_out: SnapshotSource, names: tuple[str, str] = ("training", "held-out")) -> None:
    """Raise if two sources (by default the training and a held-out one) could hand out the same data."""
    shared = train.identity() & held_out.identity()
    if shared:
        raise ValueError(
            f"{names[0]} source ({train.split}) and {names[1]} source ({held_out.split}) share data: {sorted(shared)}"
        )


SOURCE_KEYS = ("train_source", "val_source", "eval_source")
VM_CONFIG_KEYS = ("description", "env", *SOURCE_KEYS)
"""The top-level keys of a VM-rescheduling config (``train_source`` and ``eval_source`` required)."""
_INTERNAL_KEYS = ("path",)  # added by load_vm_config: a loaded config can be checked again


def load_vm_config(config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Read and check a VM-rescheduling config: ``env`` kwargs, ``train_source``, ``eval_source``
    and an optional ``val_source`` (and a ``description``).

    ``config`` may be a YAML path, which may name a bundled config (``configs/vm_rescheduling/...``)
    from any folder, or a mapping of the same keys.

    ``val_source`` is what training evaluates on to pick its ``best`` model, so that the
    evaluation files stay unseen until ``evaluate.py``. The sources are checked to be pairwise
    disjoint (:func:`check_disjoint`).

    Returns:
        The config (a new mapping), with ``path``: the file it came from (``"<dict>"`` for a mapping).

    Raises:
        ConfigError: a missing or unreadable file, not YAML, an unknown or missing key (named
            with the allowed ones and a did-you-mean), a bad value, sources that share data.
    """
    if isinstance(config, dict):
        where = str(config.get("path", "<dict>"))
        doc = dict(config)
    else:
        path = resolve_path(config)
        where = str(path)
        try:
            doc = read_yaml(path)
        except UsageError as exc:
            raise ConfigError(str(exc)) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(VM_CONFIG_KEYS)}, got {type(doc).__name__}")
    for key in _INTERNAL_KEYS:
        doc.pop(key, None)
    check_keys(where, doc, VM_CONFIG_KEYS, section="a VM-rescheduling config")
    for key in ("train_source", "eval_source"):
        if key not in doc:
            raise ConfigError(f"{where}: missing required key {key!r} (a VM-rescheduling config has "
                              f"{', '.join(VM_CONFIG_KEYS)}; val_source and env are optional)")
    from envs.vm_rescheduling import check_env_options  # the env imports this module

    doc["env"] = dict(check_env_options(where, doc.get("env") or {}, prefix="env."))
    sources = {k: make_source(doc[k], where=f"{where}: {k}") for k in SOURCE_KEYS if k in doc}
    names = {"train_source": "training", "val_source": "validation", "eval_source": "evaluation"}
    keys = list(sources)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            try:
                check_disjoint(sources[a], sources[b], (names[a], names[b]))
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    doc["path"] = where
    return doc
