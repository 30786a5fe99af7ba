"""Deployment: a skeleton model exports, through to_dense_model (ONNX, torch.export) or as it is
(torch.export keeps the custom op as one node), and the exported program computes the same."""

import pytest
import torch
from torch import nn

import skeleton_cuda
from skeleton_cuda import SkeletonConv2d


def _skeleton_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16),  # depthwise, dilated
        nn.Conv2d(16, 16, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
    model = skeleton_cuda.convert_model(model)
    # Non-trivial batch-norm statistics, so that eval mode differs from a fresh model.
    with torch.no_grad():
        model(torch.randn(8, 3, 16, 16))
    return model.eval()


def _skeleton_ops(graph_module):
    return [n for n in graph_module.graph.nodes
            if n.op == "call_function" and str(n.target).startswith("skeleton_cuda.skeleton_conv2d")]


def test_dense_copy_exports_with_torch_export_and_matches():
    model = _skeleton_model()
    x = torch.randn(2, 3, 16, 16)
    dense = skeleton_cuda.to_dense_model(model)
    assert not any(isinstance(m, SkeletonConv2d) for m in dense.modules())
    program = torch.export.export(dense, (x,))
    assert not _skeleton_ops(program.graph_module)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(program.module()(x), expected, rtol=1e-5, atol=1e-5)
        x2 = torch.randn(2, 3, 16, 16)
        torch.testing.assert_close(program.module()(x2), model(x2), rtol=1e-5, atol=1e-5)


def test_skeleton_model_exports_as_one_custom_op_per_layer():
    model = _skeleton_model()
    x = torch.randn(2, 3, 16, 16)
    program = torch.export.export(model, (x,))
    nodes = _skeleton_ops(program.graph_module)
    assert len(nodes) == 3  # one opaque node per SkeletonConv2d, nothing decomposed
    assert all(n.target is torch.ops.skeleton_cuda.skeleton_conv2d.default for n in nodes)
    assert not any("convolution" in str(n.target) for n in program.graph_module.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)
    # The exported program survives a save/load round trip (the op is found by name).
    import io

    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module()(x), model(x), rtol=0, atol=0)


def test_skeleton_model_exports_with_a_dynamic_batch():
    model = _skeleton_model()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-6, atol=1e-6)


def test_onnx_export_of_the_dense_copy(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")  # torch.onnx.export's exporter (dynamo=True) needs it
    from onnx.reference import ReferenceEvaluator

    model = _skeleton_model()
    dense = skeleton_cuda.to_dense_model(model)
    x = torch.randn(2, 3, 16, 16)
    path = str(tmp_path / "skeleton.onnx")
    program = torch.onnx.export(dense, (x,), dynamo=True, verbose=False)
    program.save(path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert "Conv" in {n.op_type for n in proto.graph.node}
    # Every 3x3 kernel in the file still has zero corners (batch norm may have been folded in).
    from onnx import numpy_helper

    kernels = [numpy_helper.to_array(t) for t in proto.graph.initializer if len(t.dims) == 4 and tuple(t.dims[2:]) == (3, 3)]
    assert len(kernels) == 3
    for kernel in kernels:
        assert not kernel[..., ::2, ::2].any()
    # Run the ONNX graph with onnx's own reference runtime (no onnxruntime needed).
    session = ReferenceEvaluator(proto)
    (output,) = session.run(None, {proto.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(output), model(x), rtol=1e-4, atol=1e-4)
