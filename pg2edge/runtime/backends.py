"""Run a bundle's parts on onnxruntime or LiteRT behind one small interface.

Both backends take and return numpy arrays by the manifest's tensor names.
The decode call gets the KV cache buffers themselves: onnxruntime binds them
(no copy per token, `IOBinding` over numpy memory); LiteRT's signature runner
copies its inputs, which is what its Python API allows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from pg2edge.errors import Pg2EdgeError


class BackendUnavailableError(Pg2EdgeError):
    """The bundle asks for a backend whose Python package is not installed."""


class Backend(Protocol):
    name: str

    def run(self, part: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _threads() -> int:
    """Intra-op threads: PG2EDGE_THREADS, else every core the process may use."""
    env = os.environ.get("PG2EDGE_THREADS")
    if env:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OnnxBackend:
    """onnxruntime sessions per part; decode through IO binding over caller-owned buffers."""

    name = "onnx"

    def __init__(self, bundle: Path, files: dict[str, str], outputs: dict[str, list[str]]):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError("backend onnx needs the onnxruntime package "
                                          "(pip install onnxruntime)") from None
        self._ort = ort
        self._bundle, self._files, self._outputs = bundle, files, outputs
        self._sessions: dict = {}
        self._bindings: dict = {}

    def session(self, part: str):
        """The part's session, created on first use: unused prefill buckets cost no memory."""
        if part not in self._sessions:
            ort = self._ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = _threads()
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._sessions[part] = ort.InferenceSession(str(self._bundle / self._files[part]), opts,
                                                        providers=["CPUExecutionProvider"])
        return self._sessions[part]

    def run(self, part: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._outputs[part]
        return dict(zip(names, self.session(part).run(names, feeds)))

    def run_bound(self, part: str, feeds: dict[str, np.ndarray], outs: dict[str, np.ndarray]) -> None:
        """Run with inputs and outputs bound to the caller's numpy buffers: no copies per call.

        The binding is built once per set of buffers and reused while the caller
        keeps passing the same arrays (mutated in place: token, pos, KV cache).
        """
        ident = tuple((n, a.ctypes.data, a.shape) for n, a in (*feeds.items(), *outs.items()))
        cached = self._bindings.get(part)
        if cached is None or cached[0] != ident:
            session = self.session(part)
            binding = session.io_binding()
            values = []
            for name, arr in feeds.items():
                value = self._ort.OrtValue.ortvalue_from_numpy(arr)  # shares the numpy memory on CPU
                binding.bind_ortvalue_input(name, value)
                values.append(value)
            for name, arr in outs.items():
                binding.bind_output(name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
            cached = (ident, binding, values, session)
            self._bindings[part] = cached
        cached[3].run_with_iobinding(cached[1])


class TFLiteBackend:
    """LiteRT interpreters per part, called through their named signature."""

    name = "tflite"

    def __init__(self, bundle: Path, files: dict[str, str], outputs: dict[str, list[str]]):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise BackendUnavailableError("backend tflite needs the ai-edge-litert package "
                                          "(pip install ai-edge-litert)") from None
        self._runners = {}
        for part, rel in files.items():
            interp = Interpreter(model_path=str(bundle / rel), num_threads=_threads())
            self._runners[part] = interp.get_signature_runner(part)
        self._outputs = outputs

    def run(self, part: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._runners[part](**feeds)
        return {name: out[name] for name in self._outputs[part]}

    def run_bound(self, part: str, feeds: dict[str, np.ndarray], outs: dict[str, np.ndarray]) -> None:
        """Same contract as onnx: results land in `outs` (here by one copy)."""
        for name, value in self.run(part, feeds).items():
            if name in outs:
                outs[name][...] = value


def open_backend(name: str, bundle: Path, manifest: dict) -> OnnxBackend | TFLiteBackend:
    """Instantiate `name` over the bundle's files for that backend."""
    files = manifest["backends"].get(name)
    if files is None:
        raise BackendUnavailableError(f"{bundle}: bundle has no {name} parts "
                                      f"(it has {', '.join(manifest['backends']) or 'none'})")
    outputs = {part: [o["name"] for o in manifest["parts"][part]["outputs"]] for part in files}
    cls = {"onnx": OnnxBackend, "tflite": TFLiteBackend}[name]
    return cls(Path(bundle), files, outputs)
