"""The wheel's layout, which pyproject.toml cannot state: the code packages plus the repository's
``data/`` and ``configs/`` folders, shipped as package data of ``digital_twin._bundled``.

In a checkout the two folders stay where they are; :mod:`digital_twin.resources` finds them either
way. Everything else about the project (metadata, pinned dependencies) is in ``pyproject.toml``.
"""

from setuptools import find_namespace_packages, setup

CODE = find_namespace_packages(include=["digital_twin*", "envs*", "agents*", "controller*", "evaluation*", "training*"])
# Namespace discovery also picks up digital_twin/microservices/topologies, a folder of YAML only.
BUNDLED = {f"digital_twin._bundled.{folder}": folder for folder in ("data", "configs")}

setup(
    packages=CODE + list(BUNDLED),
    package_dir=BUNDLED,
    package_data={
        "": ["*.yaml", "*.yml"],
        # Every file, licences and SOURCE.md notes included ("**" recurses).
        **{package: ["**/*"] for package in BUNDLED},
    },
    include_package_data=False,
)
