"""Reading the Azure Public Dataset V1 trace files into flat per-VM arrays.

The bundled ``data/azure_vm_v1/`` trace (Cortez et al., SOSP 2017, as processed by Bergsma et al.,
SOSP 2021; format in ``FORMAT.md``) lists, per 300 s bin, the VM flavours a whole Azure region
created, grouped in tenant batches, with a lifetime bucket per VM. :class:`AzureV1Trace` is one
split of it, parsed and checked (every malformed line is reported by file, line and token);
:mod:`digital_twin.vm.azure_replay` replays it onto a cluster.

* **Time origin.** Line timestamps ``T`` are trace seconds at 300 s granularity (the Azure V1
  ``vmcreated`` stamps); a line holds the VMs created in the bin ``[T, T + 300)``. This is the
  reading under which the files' windows tile exactly: dev's lines run 1,800,000..2,099,700 and its
  durations are censored at ``c2100000`` (= last line + 300), test starts at 2,100,000, and train is
  censored at 1,800,000 (= dev's first line). The replay's time 0 is the first line's timestamp and
  it ends at the censoring cut (the ``c<NUMBER>`` in the duration file's name): dev spans
  ``[1,800,000, 2,100,000)``, 300,000 s; test ``[2,100,000, 2,591,400)``, 491,400 s.
* **Lifetime buckets.** Bucket ``k`` of ``v1.interval_map.txt`` lists the 300 s-quantised durations
  ``s_k..e_k`` that map to it; the trace keeps each bucket's range ``[s_k, e_k + 300)`` (the last,
  open-ended bucket is capped at its last listed second). ``U<k>`` VMs ended before the cut,
  ``C<k>`` VMs were still running at it.
* **Held-out split.** ``split="dev"`` reads only ``v1.dev*.txt`` (development and training);
  ``split="test"`` reads only ``v1.test*.txt`` (held out).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digital_twin.resources import bundled_path

SPLITS: tuple[str, ...] = ("dev", "test")
"""``dev``: development and training; ``test``: held out, never mixed with dev."""

BIN_S = 300
"""Width of a trace line's time bin, seconds."""

DEFAULT_DATA_DIR = bundled_path("data/azure_vm_v1")

_DUR_TOKEN = re.compile(r"([UC])(\d+)")


class TraceFormatError(ValueError):
    """Malformed or mismatched trace files: names the file, the line and the field or token."""

    def __init__(self, file: str | Path, line: int | None, where: str, reason: str):
        self.file, self.line, self.where, self.reason = str(file), line, where, reason
        loc = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{loc}: {where}: {reason}")


@dataclass(frozen=True, eq=False)
class AzureV1Trace:
    """One split of the Azure V1 trace, parsed into flat arrays (one entry per VM, in file order).

    Load with :meth:`load` (cached per data directory and split). Arrays are read-only.

    Shapes:
        flavour_cpu, flavour_mem_mb: (F,); bucket_lo_s, bucket_hi_s: (B,); line_time: (L,)
        time, flavour, batch, bucket, censored, line: (V,)
    """

    split: str
    flavour_file: Path
    duration_file: Path
    cut_s: int  # right-censoring time, absolute trace seconds (the c<NUMBER> of the duration file)
    flavour_letters: tuple[str, ...]
    flavour_cpu: np.ndarray  # (F,) int64 vCPU
    flavour_mem_mb: np.ndarray  # (F,) float64 MB (GB * 1024)
    bucket_lo_s: np.ndarray  # (B,) float64 lifetime range of each bucket: [lo, hi)
    bucket_hi_s: np.ndarray  # (B,) float64
    line_time: np.ndarray  # (L,) int64 timestamp of each line
    time: np.ndarray  # (V,) int64 timestamp of the VM's line (start of its 300 s bin)
    flavour: np.ndarray  # (V,) int64 index into flavour_letters
    batch: np.ndarray  # (V,) int64 tenant batch id, 0..num_batches-1 in file order
    bucket: np.ndarray  # (V,) int64 lifetime bucket
    censored: np.ndarray  # (V,) bool: C (still running at the cut) vs U (ended before it)
    line: np.ndarray  # (V,) int64 1-based line number in the files
    num_batches: int

    @classmethod
    def load(cls, split: str = "dev", data_dir: str | Path | None = None) -> "AzureV1Trace":
        """Parse (or return the cached parse of) one split.

        Args:
            split: ``"dev"`` or ``"test"``.
            data_dir: directory with the trace files; default the bundled ``data/azure_vm_v1``.

        Raises:
            ValueError: unknown split.
            TraceFormatError: malformed or mismatched files (file, line and token named).
        """
        _check_split(split)
        root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
        return _load_cached(split, str(root.resolve()))

    @property
    def num_vms(self) -> int:
        return len(self.flavour)

    @property
    def start_s(self) -> int:
        """Absolute trace second of the replay's time 0: the first line's timestamp (its bin opens there)."""
        return int(self.line_time[0]) if len(self.line_time) else self.cut_s

    @property
    def span_s(self) -> float:
        """Length of the replay window, from time 0 to the censoring cut."""
        return float(self.cut_s - self.start_s)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS} (dev: development; test: held out)")


@functools.lru_cache(maxsize=8)
def _load_cached(split: str, root: str) -> AzureV1Trace:
    data = Path(root)
    flav_file = data / f"v1.{split}.txt"
    durs = sorted(data.glob(f"v1.{split}.c*.txt"))
    if not flav_file.is_file():
        raise TraceFormatError(flav_file, None, "file", f"flavour trace for split {split!r} not found")
    if len(durs) != 1:
        found = ", ".join(p.name for p in durs) or "none"
        raise TraceFormatError(data / f"v1.{split}.c<CUT>.txt", None, "file",
                               f"expected exactly one duration trace for split {split!r}, found {found}")
    dur_file = durs[0]
    m = re.fullmatch(rf"v1\.{re.escape(split)}\.c(\d+)\.txt", dur_file.name)
    if m is None:
        raise TraceFormatError(dur_file, None, "file name", "expected v1.<split>.c<CUT SECONDS>.txt")
    cut = int(m.group(1))
    letters, fcpu, fmem = _read_flavour_map(data / "flav_map.txt")
    lo, hi = _read_interval_map(data / "v1.interval_map.txt")
    arrays = _parse_pair(flav_file, dur_file, {l: i for i, l in enumerate(letters)}, len(lo), cut)
    for a in (fcpu, fmem, lo, hi, *arrays[:-1]):
        a.flags.writeable = False
    line_time, time, flavour, batch, bucket, censored, line, num_batches = arrays
    return AzureV1Trace(
        split=split, flavour_file=flav_file, duration_file=dur_file, cut_s=cut,
        flavour_letters=tuple(letters), flavour_cpu=fcpu, flavour_mem_mb=fmem,
        bucket_lo_s=lo, bucket_hi_s=hi, line_time=line_time, time=time, flavour=flavour,
        batch=batch, bucket=bucket, censored=censored, line=line, num_batches=num_batches,
    )


def _read_flavour_map(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``flav_map.txt``: line i is ``vcpu,memGB letter``."""
    letters, cpu, mem = [], [], []
    for n, raw in enumerate(_read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.split()
        try:
            c, g = parts[0].split(",")
            c_val, g_val, letter = int(c), float(g), parts[1]
        except (ValueError, IndexError):
            raise TraceFormatError(path, n, "line", f"expected 'VCPU,MEM_GB LETTER', got {raw!r}") from None
        if len(parts) != 2 or c_val <= 0 or g_val <= 0:
            raise TraceFormatError(path, n, "line", f"expected 'VCPU,MEM_GB LETTER' with positive sizes, got {raw!r}")
        if letter in letters or letter == "|":
            raise TraceFormatError(path, n, "flavour", f"duplicate or reserved flavour {letter!r}")
        letters.append(letter)
        cpu.append(c_val)
        mem.append(g_val * 1024.0)
    return letters, np.array(cpu, dtype=np.int64), np.array(mem, dtype=np.float64)


def _read_interval_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``v1.interval_map.txt``: ``seconds bucket`` per line; returns each bucket's ``[lo, hi)`` seconds."""
    secs, buckets = [], []
    for n, raw in enumerate(_read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            s, b = raw.split()
            secs.append(int(s))
            buckets.append(int(b))
        except ValueError:
            raise TraceFormatError(path, n, "line", f"expected 'SECONDS BUCKET', got {raw!r}") from None
        if len(secs) > 1 and (secs[-1] <= secs[-2] or not 0 <= buckets[-1] - buckets[-2] <= 1):
            raise TraceFormatError(path, n, "line", "seconds must increase and buckets go up by 0 or 1")
    if not buckets or buckets[0] != 0:
        raise TraceFormatError(path, 1, "bucket", "bucket numbering must start at 0")
    s, b = np.array(secs, dtype=np.float64), np.array(buckets)
    num = int(b[-1]) + 1
    lo = np.array([s[b == k].min() for k in range(num)])
    hi = np.append(lo[1:], s[-1])  # bucket k ends where k+1 begins; the open-ended last one is capped
    if hi[-1] <= lo[-1]:
        hi[-1] = lo[-1] + BIN_S
    return lo, hi


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceFormatError(path, None, "file", "not found") from None
    except UnicodeDecodeError as e:
        raise TraceFormatError(path, None, "file", f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def _split_lines(path: Path) -> tuple[list[int], list[list[str]]]:
    """Timestamps and token lists of a trace file (a trailing comma ends a line)."""
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    times, tokens = [], []
    for n, raw in enumerate(lines, start=1):
        parts = raw.split()
        if not parts or len(parts) > 2:
            raise TraceFormatError(path, n, "line", f"expected 'TIMESTAMP tok,tok,...', got {raw[:60]!r}")
        try:
            t = int(parts[0])
        except ValueError:
            raise TraceFormatError(path, n, "timestamp", f"not an integer: {parts[0][:30]!r}") from None
        if times and t <= times[-1]:
            raise TraceFormatError(path, n, "timestamp", f"{t} does not increase (previous line: {times[-1]})")
        toks = parts[1].split(",") if len(parts) == 2 else []
        if toks and toks[-1] == "":
            toks.pop()
        times.append(t)
        tokens.append(toks)
    return times, tokens


def _parse_pair(flav_file: Path, dur_file: Path, flav_index: dict[str, int], num_buckets: int, cut: int) -> tuple:
    """Parse a flavour trace and its duration trace, checking they match token for token."""
    ftimes, ftoks = _split_lines(flav_file)
    dtimes, dtoks = _split_lines(dur_file)
    for n, (ft, dt) in enumerate(zip(ftimes, dtimes), start=1):
        if ft != dt:
            raise TraceFormatError(dur_file, n, "timestamp", f"{dt} differs from {ft} in {flav_file.name}")
    if len(ftimes) != len(dtimes):
        short, long_ = (dur_file, flav_file) if len(dtimes) < len(ftimes) else (flav_file, dur_file)
        n = min(len(ftimes), len(dtimes)) + 1
        raise TraceFormatError(short, n, "line", f"missing: file ends after {n - 1} lines, {long_.name} has more")
    if ftimes and ftimes[-1] + BIN_S > cut:
        raise TraceFormatError(dur_file, len(ftimes), "timestamp",
                               f"bin [{ftimes[-1]}, {ftimes[-1] + BIN_S}) ends past the censoring cut {cut} (file name)")

    fmap: dict[str, int] = {**flav_index, "|": -1}
    dmap: dict[str, int] = {"|": -1}  # token -> 2 * bucket + censored
    fcodes: list[int] = []
    dcodes: list[int] = []
    counts: list[int] = []
    for n, (ft, dt) in enumerate(zip(ftoks, dtoks), start=1):
        if len(ft) != len(dt):
            raise TraceFormatError(dur_file, n, "token count",
                                   f"{len(dt)} tokens (VMs and '|') but {flav_file.name} has {len(ft)}")
        try:
            fline = [fmap[t] for t in ft]
        except KeyError:
            j, tok = next((j, t) for j, t in enumerate(ft, start=1) if t not in fmap)
            known = "".join(k for k in fmap if k != "|")
            reason = "empty token (two commas in a row)" if tok == "" else f"unknown flavour (known: {known!r} from flav_map.txt)"
            raise TraceFormatError(flav_file, n, f"token {j} {tok!r}", reason) from None
        try:
            dline = [dmap[t] for t in dt]
        except KeyError:
            for j, tok in enumerate(dt, start=1):
                if tok not in dmap:
                    dmap[tok] = _duration_code(tok, dur_file, n, j, num_buckets)
            dline = [dmap[t] for t in dt]
        fcodes.extend(fline)
        dcodes.extend(dline)
        counts.append(len(ft))

    f = np.array(fcodes, dtype=np.int64)
    d = np.array(dcodes, dtype=np.int64)
    line_of = np.repeat(np.arange(1, len(counts) + 1), counts)
    first_tok = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else np.zeros(0, np.int64)
    bad = np.flatnonzero((f == -1) != (d == -1))
    if len(bad):
        pos = int(bad[0])
        n = int(line_of[pos])
        j = pos - int(first_tok[n - 1]) + 1
        ftok, dtok = ftoks[n - 1][j - 1], dtoks[n - 1][j - 1]
        raise TraceFormatError(dur_file, n, f"token {j} {dtok!r}",
                               f"tenant batches differ: {flav_file.name} has {ftok!r} there")
    sep = f == -1
    # A tenant batch starts at a VM that follows a '|' or opens a line.
    prev_sep = np.concatenate([[True], sep[:-1]])
    new_line = np.zeros(len(f), dtype=bool)
    new_line[first_tok[np.asarray(counts) > 0]] = True
    vm = ~sep
    starts = vm & (prev_sep | new_line)
    batch_all = np.cumsum(starts) - 1
    line_time = np.array(ftimes, dtype=np.int64)
    line = line_of[vm]
    return (
        line_time,
        line_time[line - 1],
        f[vm],
        batch_all[vm].astype(np.int64),
        d[vm] >> 1,
        (d[vm] & 1).astype(bool),
        line,
        int(starts.sum()),
    )


def _duration_code(tok: str, file: Path, line: int, j: int, num_buckets: int) -> int:
    m = _DUR_TOKEN.fullmatch(tok)
    if tok == "":
        raise TraceFormatError(file, line, f"token {j} ''", "empty token (two commas in a row)")
    if m is None:
        raise TraceFormatError(file, line, f"token {j} {tok!r}",
                               "expected U<bucket> (ended before the cut), C<bucket> (censored) or '|'")
    k = int(m.group(2))
    if k >= num_buckets:
        raise TraceFormatError(file, line, f"token {j} {tok!r}",
                               f"lifetime bucket {k} out of range 0..{num_buckets - 1} (v1.interval_map.txt)")
    return 2 * k + (m.group(1) == "C")


__all__ = ["SPLITS", "BIN_S", "DEFAULT_DATA_DIR", "AzureV1Trace", "TraceFormatError"]
