"""Project-wide test settings: quiet threads and no wandb network, as CI runs; the shared local Ray."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One local Ray (2 CPUs) for the whole test run, started by the first test that asks for it
    (starting and stopping one costs ~5 s). Ray writes a token under ``~/.ray/``: a home that cannot
    be written is replaced by a temporary one."""
    import ray  # the [ray] extra, which make test installs

    home = os.path.expanduser("~")
    if not os.access(home, os.W_OK):
        os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("torch_one_thread")``):
    torch's default threads make a small GNN many times slower on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
