"""Run a bundle's parts on onnxruntime or LiteRT behind one small interface.

Both backends take and return numpy arrays by the manifest's tensor names.
The decode loop runs through a backend-specific decoder that owns the KV
cache where the backend reads it without copies: numpy buffers bound once
with onnxruntime's IO binding (the `step` graph writes them in place), or
LiteRT's own input tensors written in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from pg2edge.errors import Pg2EdgeError


class BackendUnavailableError(Pg2EdgeError):
    """The bundle asks for a backend whose Python package is not installed."""


class ChunkDecoder(Protocol):
    """The static KV cache plus the decode part, after a separate prefill part: `write` its chunk, then
    `step` per token (TFLite)."""

    def write(self, chunk: dict[str, np.ndarray], start: int) -> None: ...

    def step(self, token: int, pos: int) -> np.ndarray: ...


class StepDecoder(Protocol):
    """The static KV cache and one `step` graph for the prompt (`prefill`) and every token (ONNX)."""

    def prefill(self, image_embeds: np.ndarray, tokens: np.ndarray) -> np.ndarray: ...

    def step(self, token: int, pos: int) -> np.ndarray: ...


Decoder = ChunkDecoder | StepDecoder


class Backend(Protocol):
    name: str

    def run(self, part: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def decoder(self, part: str, kv_specs: list[dict], logits_shape: tuple[int, ...]) -> Decoder: ...

    def release(self) -> None: ...


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

    def decoder(self, part: str, kv_specs: list[dict], logits_shape: tuple[int, ...]) -> "OnnxStepDecoder":
        """The decode loop's state: KV buffers owned here, bound once with IO binding (ONNX bundles decode
        through their one `step` graph)."""
        return OnnxStepDecoder(self._ort, self.session(part), kv_specs, logits_shape)

    def release(self) -> None:
        """Drop every session (a decoder still alive keeps its own); the next run loads again."""
        self._sessions.clear()
        _return_freed_memory()


class OnnxStepDecoder:
    """Prefill and decode through one `step` session (symbolic chunk length): the decoder weights are held
    once. Each cache buffer is bound both as its `k_i`/`v_i` input and as the `present_k_i`/`present_v_i`
    output, so onnxruntime writes each call's new slots into it in place and reads only the filled ones.
    Decode reuses one binding (a zero-length image input, one token); `prefill` binds the prompt once."""

    def __init__(self, ort, session, kv_specs: list[dict], logits_shape: tuple[int, ...]):
        self._ort, self._session = ort, session
        self.cache = {s["name"]: np.zeros(s["shape"], s["dtype"]) for s in kv_specs}
        self.logits = np.zeros(logits_shape, np.float32)
        self._pos, self._token = np.zeros((1,), np.int32), np.zeros((1, 1), np.int32)
        self._width = next(i for i in session.get_inputs() if i.name == "image_embeds").shape[2]
        self._decode = self._bind(np.zeros((logits_shape[0], 0, self._width), np.float32), self._token)

    def _bind(self, image_embeds: np.ndarray, tokens: np.ndarray) -> tuple:
        """(an IO binding of these inputs, `pos`, the logits and every cache buffer in and out; the OrtValues
        it reads, which must outlive it)."""
        binding, values = self._session.io_binding(), []
        for name, arr in {"image_embeds": image_embeds, "tokens": tokens, "pos": self._pos, **self.cache}.items():
            values.append(self._ort.OrtValue.ortvalue_from_numpy(arr))  # shares the numpy memory on CPU
            binding.bind_ortvalue_input(name, values[-1])
        for name, arr in {"logits": self.logits, **{f"present_{n}": b for n, b in self.cache.items()}}.items():
            binding.bind_output(name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
        return binding, values

    def prefill(self, image_embeds: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The prompt (image embeddings + tokens, unpadded) at slots [0, n); returns the last logits."""
        self._pos[0] = 0
        feeds = (np.ascontiguousarray(image_embeds, np.float32), np.ascontiguousarray(tokens, np.int32))
        binding, _values = self._bind(*feeds)
        self._session.run_with_iobinding(binding)
        return self.logits.copy()  # the buffer is the next step's output

    def step(self, token: int, pos: int) -> np.ndarray:
        """One decode call at slot `pos` (its keys/values land in the cache in place); returns logits."""
        self._token[0, 0], self._pos[0] = token, pos
        self._session.run_with_iobinding(self._decode[0])
        return self.logits


class TFLiteBackend:
    """LiteRT interpreters per file, called through named signatures.

    A part is one file whose signature is the part's name, or (a staged
    bundle) a pipeline of `[file, signature]` stages: each stage reads its
    inputs by name from the part's inputs and the earlier stages' outputs.
    One interpreter serves every signature of its file, so signatures that
    share weights share them in memory too.
    """

    name = "tflite"

    def __init__(self, bundle: Path, files: dict[str, str | dict], outputs: dict[str, list[str]]):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise BackendUnavailableError("backend tflite needs the ai-edge-litert package "
                                          "(pip install ai-edge-litert)") from None
        self._interpreter_cls = Interpreter
        self._bundle = bundle
        self._stages = {part: _stages_of(part, entry) for part, entry in files.items()}
        self._interpreters: dict = {}
        self._runners: dict = {}
        self._outputs = outputs

    def interpreter(self, file: str):
        """The file's interpreter, created on first use."""
        if file not in self._interpreters:
            self._interpreters[file] = self._interpreter_cls(model_path=str(self._bundle / file),
                                                             num_threads=_threads())
        return self._interpreters[file]

    def _runner(self, file: str, signature: str):
        key = (file, signature)
        if key not in self._runners:
            self._runners[key] = self.interpreter(file).get_signature_runner(signature)
        return self._runners[key]

    def run(self, part: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = dict(feeds)
        for file, signature in self._stages[part]:
            runner = self._runner(file, signature)
            env.update(runner(**{name: env[name] for name in runner.get_input_details()}))
        return {name: env[name] for name in self._outputs[part]}

    def decoder(self, part: str, kv_specs: list[dict], logits_shape: tuple[int, ...]) -> "TFLiteDecoder":
        """The decode loop's state: the KV cache lives in the interpreters' own input tensors."""
        return TFLiteDecoder([_Signature(self.interpreter(file), signature) for file, signature in self._stages[part]],
                             kv_specs)

    def release(self) -> None:
        """Drop every interpreter (a decoder still alive keeps its own); the next run loads again."""
        self._runners.clear()
        self._interpreters.clear()
        _return_freed_memory()


def _return_freed_memory() -> None:
    """Ask glibc to hand freed heap pages back to the system (a no-op elsewhere, e.g. Android's bionic)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _stages_of(part: str, entry: str | dict) -> list[tuple[str, str]]:
    """A manifest entry as [(file, signature)]: a plain file runs its signature named after the part."""
    if isinstance(entry, str):
        return [(entry, part)]
    return [(file, signature) for file, signature in entry["stages"]]


class _Signature:
    """One signature's subgraph of an interpreter, driven without the signature runner's per-call copies."""

    def __init__(self, interp, signature: str):
        self._wrapper = interp._interpreter  # noqa: SLF001 - the subgraph-aware calls live on the wrapper
        io = interp._get_full_signature_list()[signature]  # noqa: SLF001 - name -> tensor index
        self.inputs, self.outputs = dict(io["inputs"]), dict(io["outputs"])
        self._subgraph = self._wrapper.GetSubgraphIndexFromSignature(signature)
        self._wrapper.AllocateTensors(self._subgraph)

    def view(self, name: str) -> np.ndarray:
        """A writable view of an input tensor (never held across `invoke`)."""
        return self._wrapper.tensor(self._wrapper, self.inputs[name], self._subgraph)

    def set(self, name: str, value: np.ndarray) -> None:
        self._wrapper.SetTensor(self.inputs[name], value, self._subgraph)

    def get(self, name: str) -> np.ndarray:
        return self._wrapper.GetTensor(self.outputs[name], self._subgraph)

    def invoke(self) -> None:
        self._wrapper.Invoke(self._subgraph)


class TFLiteDecoder:
    """KV cache stored in the decode signatures' input tensors, updated in place.

    LiteRT's signature runner copies every input on every call; here each
    cache input is written once per new entry through a tensor view of the
    stage that reads it, so per step only the token, position, hidden state
    and new entries move between stages.
    """

    def __init__(self, stages: list[_Signature], kv_specs: list[dict]):
        self._stages = stages
        self._kv_names = [s["name"] for s in kv_specs]
        self._owner = {name: stage for stage in stages for name in self._kv_names if name in stage.inputs}
        missing = [n for n in self._kv_names if n not in self._owner]
        if missing:
            raise Pg2EdgeError(f"decode stages read no cache input {missing[0]!r}")
        for name, stage in self._owner.items():
            stage.view(name)[...] = 0

    def write(self, chunk: dict[str, np.ndarray], start: int) -> None:
        for name in self._kv_names:
            new = chunk[f"new_{name}"]
            self._owner[name].view(name)[:, :, start:start + new.shape[2]] = new

    def step(self, token: int, pos: int) -> np.ndarray:
        env = {"token": np.array([token], np.int32), "pos": np.array([pos], np.int32)}
        for stage in self._stages:
            for name in stage.inputs:
                if name not in self._owner:
                    stage.set(name, env[name])
            stage.invoke()
            env.update((name, stage.get(name)) for name in stage.outputs)
        self.write(env, pos)
        return env["logits"]


def open_backend(name: str, bundle: Path, manifest: dict) -> OnnxBackend | TFLiteBackend:
    """Instantiate `name` over the bundle's files for that backend."""
    files = manifest["backends"].get(name)
    if files is None:
        raise BackendUnavailableError(f"{bundle}: bundle has no {name} parts "
                                      f"(it has {', '.join(manifest['backends']) or 'none'})")
    outputs = {part: [o["name"] for o in manifest["parts"][part]["outputs"]] for part in files}
    cls = {"onnx": OnnxBackend, "tflite": TFLiteBackend}[name]
    return cls(Path(bundle), files, outputs)
