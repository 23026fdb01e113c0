"""Shared fixtures for the microservice twin tests."""

import numpy as np
import pytest

from digital_twin.microservices import load_topology


@pytest.fixture(scope="session")
def boutique():
    return load_topology("online_boutique")


@pytest.fixture(scope="session")
def chain4():
    return load_topology("chain4")


def constant_load(rate: float, steps: int) -> np.ndarray:
    return np.full(steps, float(rate))
