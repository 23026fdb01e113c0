"""Ray for clustergym: connecting to it, and running evaluation cells as Ray tasks.

Ray is an optional extra (``pip install 'clustergym[ray]'``): :func:`require_ray` is the one place
that says so when ``train.py --sweep`` or ``evaluate.py --ray`` is asked for without it.
:func:`connect` joins an existing cluster (``--ray-address``) or starts a local Ray with this
machine's cores, and reuses a Ray this process has already started (the tests share one).

:func:`run_cells_on_ray` is the Ray side of :func:`evaluation.vm.evaluate_vm`'s ``run_cells`` hook:
every cell (one planner on one episode) becomes a task; the results come back in the cells' order,
so the rows are those of a local run. A task that raises is reported on stderr and submitted again,
up to ``retries`` times; a task whose worker dies is retried by Ray itself (``max_retries``). A cell
that still fails stops the evaluation with an error naming it: no cell is ever dropped.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterator, Sequence

from digital_twin.cli import UsageError

INSTALL_HINT = "pip install 'clustergym[ray]' (or: make test, which installs it)"
"""How the missing-Ray message says to install it."""

CELL_RETRIES = 2
"""Times a cell that raised is submitted again before the evaluation stops."""


def require_ray(flag: str):
    """The ``ray`` module, or a one-line :class:`UsageError` naming ``flag`` and how to install Ray."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"{flag} needs Ray, which is not installed; install it with {INSTALL_HINT}") from None
    return ray


def connect(address: str | None, flag: str):
    """Join the Ray cluster at ``address`` (``ray start --head`` prints it), or start a local Ray with
    this machine's cores when None; a Ray already started in this process is reused as it is.

    Raises:
        UsageError: Ray is not installed, or no cluster answers at ``address``.
    """
    ray = require_ray(flag)
    if ray.is_initialized():
        return ray
    try:
        # "local": a new Ray of this machine's cores, even if a cluster started by ray start runs here too.
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address is None:  # a local Ray that does not start is no user mistake: keep the traceback
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UsageError(f"--ray-address {address}: cannot connect to a Ray cluster there ({first}); start one with "
                         "ray start --head, or leave --ray-address out for a local Ray (a cluster with token "
                         "authentication, Ray's default, also needs RAY_AUTH_MODE=token here and its token in "
                         "~/.ray/auth_token or $RAY_AUTH_TOKEN)") from None
    return ray


def run_cells_on_ray(fn: Callable[..., Any], cells: Sequence[tuple],
                     describe: Callable[[Sequence[Any]], str] | None = None, *,
                     retries: int = CELL_RETRIES) -> Iterator[Any]:
    """``fn(*cell)`` for every cell as a Ray task (Ray must be connected: :func:`connect`), yielded
    in the cells' order.

    Arguments shared by several cells (an episode's snapshot, a planner) are put in Ray's object
    store once.

    Args:
        fn: a picklable function of one cell's arguments.
        cells: the argument tuples.
        describe: cell arguments -> the name the messages give it.
        retries: times a cell that raised is submitted again (each failure is reported on stderr).

    Raises:
        RuntimeError: a cell still failed after ``retries`` more attempts (naming the cell and its error).
    """
    import ray

    task = ray.remote(num_cpus=1, max_retries=3)(fn)  # max_retries: a dead worker's task runs again
    shared: dict[int, Any] = {}

    def ref(value: Any) -> Any:
        if isinstance(value, (int, float, str, bool, type(None))):
            return value
        if id(value) not in shared:
            shared[id(value)] = ray.put(value)
        return shared[id(value)]

    submitted = [[ref(a) for a in cell] for cell in cells]
    pending = [task.remote(*args) for args in submitted]
    for i, cell in enumerate(cells):
        for attempt in range(retries + 1):
            try:
                yield ray.get(pending[i])
                break
            except ray.exceptions.RayError as exc:
                cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause else exc
                first = str(cause).strip().splitlines()[0] if str(cause).strip() else cause.__class__.__name__
                what = f"{describe(cell) if describe else f'cell {i}'} failed ({cause.__class__.__name__}: {first})"
                if attempt == retries:
                    raise RuntimeError(f"{what} after {retries + 1} attempts; the evaluation stops "
                                       "(no cell is dropped)") from None
                print(f"ray: {what}; retrying ({attempt + 1}/{retries})", file=sys.stderr)
                pending[i] = task.remote(*submitted[i])
