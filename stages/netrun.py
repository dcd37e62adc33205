"""ONNX networks on one thread, on OpenVINO or ONNX Runtime: each network runs where it was
measured faster (BENCHMARKS.md), with ONNX Runtime where OpenVINO is not installed.

- the text detector (PP-OCRv4): OpenVINO in float32, 0.64x ONNX Runtime's time, outputs within
  1e-5 of it;
- the face detector (CenterFace): ``centerface-bf16``, the default, leaves the precision to
  OpenVINO, which computes in bfloat16 where the CPU does so natively (AMX: Intel Xeon since
  Sapphire Rapids): about 0.5x the time, outputs within 0.01-0.05; on a CPU without native
  bfloat16 it runs as ``centerface`` does: float32 on ONNX Runtime (OpenVINO's float32 was slower:
  ``--stages crop`` 16.3 s against 15.7 s on an AMX CPU, 100-117 ms against 63-83 ms a 640x480
  photo on an AVX2-only one; ``native_bf16``).

``FACESIFT_RUNTIME=onnxruntime`` (or ``openvino``) picks the runtime for every network.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

RUNTIMES = ("openvino", "onnxruntime")

#: a network as a function of its input batch (NCHW float32) -> the asked outputs
Network = Callable[[np.ndarray], list[np.ndarray]]


def runtime(prefer: str = "openvino") -> str:
    """The runtime to use: $FACESIFT_RUNTIME, else *prefer* where installed, else ONNX Runtime."""
    name = os.environ.get("FACESIFT_RUNTIME", "")
    if name and name not in RUNTIMES:
        raise ValueError(f"FACESIFT_RUNTIME must be one of {', '.join(RUNTIMES)}, got {name!r}")
    name = name or prefer
    return name if name == "onnxruntime" or importlib.util.find_spec("openvino") is not None else "onnxruntime"


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether OpenVINO computes bfloat16 natively on this CPU (AVX512-BF16 or AMX: its
    ``OPTIMIZATION_CAPABILITIES`` list BF16). Elsewhere its bfloat16 hint means float32, where
    OpenVINO was slower than ONNX Runtime on CenterFace (BENCHMARKS.md)."""
    if importlib.util.find_spec("openvino") is None:
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def onnxruntime_session(model: str | bytes) -> Any:
    """A one-thread ONNX Runtime session for a model file path or a serialised model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # parallelism comes from worker processes
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # e.g. an export's unused batch-norm counters, reported one by one
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def load(path: str, outputs: Sequence[str] = (), *, prefer: str = "openvino", precision: str = "f32",
         session: Callable[[str], Any] = onnxruntime_session) -> Network:
    """The network in the ``.onnx`` file at *path*, any batch and image size, one thread.

    *outputs*: names of the outputs to return, in order (default: all); *prefer*: the runtime
    measured faster for this network (see ``runtime``); *precision*: OpenVINO's inference precision
    ("f32", "bf16"; "": its default for the CPU; ONNX Runtime always computes in float32);
    *session*: how ONNX Runtime opens the file, where the file needs preparing for it (OpenVINO
    reads it as it is).
    """
    if runtime(prefer) == "onnxruntime":
        sess = session(path)
        name = sess.get_inputs()[0].name
        names = list(outputs) or None
        return lambda x: sess.run(names, {name: x})
    return OpenVINONetwork(path, outputs, precision)


class OpenVINONetwork:
    """A network compiled by OpenVINO for one thread (see ``load``); ``compiled`` is OpenVINO's."""

    def __init__(self, path: str, outputs: Sequence[str], precision: str) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(path)
        channels = model.inputs[0].get_partial_shape()[1]
        model.reshape({model.inputs[0]: ov.PartialShape([-1, channels, -1, -1])})  # a new shape is prepared on first use
        # One thread, one stream: parallelism comes from worker processes, and OpenVINO's default
        # pinning would put every worker's inference thread on the same core.
        config = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.ports = [self.compiled.output(o) for o in outputs] or list(self.compiled.outputs)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        res = self.request.infer({0: x})  # outputs are copies (share_outputs is off)
        return [np.asarray(res[port]) for port in self.ports]


# -- a fixed-size export made size-free, without the onnx package ---------------------------------
# ``import onnx`` costs about a second of every worker's start (its ml_dtypes extension), for an
# edit of a few fields. These are the fields of onnx.proto it touches: ModelProto.graph;
# GraphProto.initializer, .input, .output; TensorProto.name; ValueInfoProto.name, .type;
# TypeProto.tensor_type; TypeProto.Tensor.shape; TensorShapeProto.dim; its Dimension's dim_param.
_MODEL_GRAPH, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 7, 5, 11, 12
_TENSOR_NAME, _VALUE_NAME, _VALUE_TYPE, _TYPE_TENSOR, _TENSOR_SHAPE, _SHAPE_DIM, _DIM_PARAM = 8, 1, 2, 1, 2, 1, 2


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("not a serialised ONNX model (it ends inside a number)")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _put_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _message(field: int, payload: bytes | memoryview) -> bytes:
    """A length-delimited field (tag, length, payload)."""
    return _put_varint(field << 3 | 2) + _put_varint(len(payload)) + bytes(payload)


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview, memoryview | None]]:
    """(field number, the field's bytes with its tag, its payload where length-delimited) of each
    field of a serialised protobuf message."""
    i = 0
    while i < len(buf):
        start = i
        key, i = _varint(buf, i)
        payload = None
        wire = key & 7
        if wire == 0:
            i = _varint(buf, i)[1]
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i)
            payload, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"not a serialised ONNX model (protobuf wire type {wire})")
        if i > len(buf):
            raise ValueError("not a serialised ONNX model (a field runs past the end)")
        yield key >> 3, buf[start:i], payload


def _edited(buf: memoryview, edit: Callable[[int, memoryview], bytes | memoryview | None]) -> bytes:
    """*buf* with each length-delimited field's payload replaced by ``edit(field, payload)``
    (None: the field left out; the payload itself: unchanged)."""
    out: list[bytes | memoryview] = []
    for field, whole, payload in _fields(buf):
        new = payload if payload is None else edit(field, payload)
        if new is payload:
            out.append(whole)
        elif new is not None:
            out.append(_message(field, new))
    return b"".join(out)


def _string(buf: memoryview, field: int) -> bytes:
    return next((bytes(p) for f, _, p in _fields(buf) if f == field and p is not None), b"")


def size_free(model: bytes) -> bytes:
    """A serialised ONNX model whose inputs and outputs declare every dimension free (any batch and
    image size, for a fully convolutional network exported at one size; the rank kept, so ONNX
    Runtime computes exactly as with the ``onnx`` package's ``update_inputs_outputs_dims``), without
    the initialisers an older exporter also listed as graph inputs (listed there, ONNX Runtime
    treats them as inputs and cannot fold them: CenterFace's batch norms ran ~1.6x slower)."""

    def free(p: memoryview) -> bytes:  # TensorShapeProto: each dim (1) -> a dim_param (2) of its own
        rank = sum(f == _SHAPE_DIM for f, _, _ in _fields(p))
        return b"".join(_message(_SHAPE_DIM, _message(_DIM_PARAM, f"d{i}".encode())) for i in range(rank))

    def tensor_type(field: int, p: memoryview) -> bytes | memoryview:
        return _edited(p, lambda f, q: free(q) if f == _TENSOR_SHAPE else q) if field == _TYPE_TENSOR else p

    def value_info(p: memoryview) -> bytes:
        return _edited(p, lambda f, q: _edited(q, tensor_type) if f == _VALUE_TYPE else q)

    def graph(payload: memoryview) -> bytes:
        weights = {_string(p, _TENSOR_NAME) for f, _, p in _fields(payload) if f == _GRAPH_INITIALIZER and p is not None}

        def io(field: int, p: memoryview) -> bytes | memoryview | None:
            if field == _GRAPH_INPUT and _string(p, _VALUE_NAME) in weights:
                return None
            return value_info(p) if field in (_GRAPH_INPUT, _GRAPH_OUTPUT) else p

        return _edited(payload, io)

    return _edited(memoryview(model), lambda f, p: graph(p) if f == _MODEL_GRAPH else p)
