"""Writing a module as ONNX: the one way facegan does it (the FID Inception backend, model folders).

The exporter is the ``torch.export``-based one of the installed torch (``dynamo=True``, needs
onnxscript): the TorchScript-based exporter is deprecated in torch 2.x. The batch axis is dynamic,
the file is written atomically, and the exporter's chatter (warnings, log lines about operators
the net does not use) is kept off the user's terminal.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from facegan.fileio import atomic_path


def save_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    """``net`` (a CPU module in eval mode) as ONNX at ``path``, batch axis 0 dynamic (1 … 4096)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                        input_names=[input_name], output_names=[output_name], verbose=False)
    finally:
        quiet.setLevel(level)
    with atomic_path(path) as tmp:
        program.save(str(tmp))


def cpu_session(path: Path, spinning: bool = True):  # -> onnxruntime.InferenceSession
    """An ONNX Runtime CPU session on torch's thread count (OMP_NUM_THREADS / torch.set_num_threads).

    ``spinning=False`` lets idle worker threads sleep, for a process that does other CPU work
    between runs (the service encodes images between forward passes).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
