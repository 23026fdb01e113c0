"""An exported policy (``policy.onnx`` + ``policy.json``, written by ``train.py export``) in onnxruntime.

The metadata says which inputs the graph takes and how the env built them; :class:`Policy` checks
it once at load, so a wrong, foreign or damaged file is refused before the controller touches a
cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "clustergym-policy/1"


class PolicyError(ValueError):
    """The policy files cannot be used (named file, what is wrong)."""


@dataclass
class Policy:
    """An ONNX policy and its metadata.

    Attributes:
        path: The ``.onnx`` file.
        metadata: ``policy.json``'s content.
        input_names: What the graph takes, in order.
    """

    path: Path
    metadata: dict[str, Any]
    session: Any
    input_names: list[str]

    @property
    def problem(self) -> str:
        return self.metadata["problem"]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for the inputs in ``feed`` (extra keys are ignored)."""
        outputs = self.session.run(None, {k: feed[k] for k in self.input_names})
        return {o.name: v for o, v in zip(self.session.get_outputs(), outputs)}


def metadata_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def load_policy(path: str | Path, problem: str | None = None, threads: int = 1) -> Policy:
    """Load ``path`` (the .onnx; its metadata beside it as .json).

    Raises:
        PolicyError: missing or unreadable files, another format or problem, or a graph whose
            inputs are not the ones the metadata lists.
    """
    import onnxruntime as ort

    path = Path(path)
    if path.is_dir():
        path = path / "policy.onnx"
    meta_file = metadata_path(path)
    for f in (path, meta_file):
        if not f.is_file():
            raise PolicyError(f"{f}: no such file (python train.py export MODEL -o {path} writes both)")
    try:
        metadata = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PolicyError(f"{meta_file}: not readable JSON ({err})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise PolicyError(f"{meta_file}: not a clustergym policy file (format {FORMAT!r} expected)")
    if problem is not None and metadata.get("problem") != problem:
        raise PolicyError(f"{meta_file}: the policy is for {metadata.get('problem')}; this command needs one for {problem}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for damaged files
        raise PolicyError(f"{path}: onnxruntime cannot load it ({str(err).splitlines()[0]})") from None
    names = [i.name for i in session.get_inputs()]
    declared = [i["name"] for i in metadata.get("onnx", {}).get("inputs", [])]
    if names != declared:
        raise PolicyError(f"{path}: the graph takes inputs {names} but {meta_file.name} declares {declared}; "
                          "export them together")
    return Policy(path, metadata, session, names)
