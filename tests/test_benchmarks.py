"""The benchmark suites compare like with like, and run end to end (tiny layers, CPU)."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import common  # noqa: E402
import cpu_suite  # noqa: E402
import gpu_suite  # noqa: E402


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 6), (2, 6)])
def test_all_benchmarked_implementations_compute_the_same_layer(stride, groups):
    x = torch.randn(2, 6, 11, 11, dtype=torch.float64)
    w5 = torch.randn(6, 6 // groups, 5, dtype=torch.float64)
    impls = gpu_suite.implementations(x, w5, None, stride, groups)
    # The masked 3x3 uses its own random weight (only its cost matters); give it ours to compare.
    reference = impls["cudnn3x3"](x)
    for name in ("decomposition", "skeleton"):
        torch.testing.assert_close(impls[name](x), reference, msg=name)
    dense, _ = common.dense_3x3(x, w5, None, stride, groups)
    torch.testing.assert_close(dense(x), reference)


def test_cpu_suite_runs_and_reports(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_suite, "DENSE", [("8@6", 1, 8, 6, 1)])
    monkeypatch.setattr(cpu_suite, "DEPTHWISE", [("dw8@6/s2", 1, 8, 6, 2)])
    monkeypatch.setattr(cpu_suite, "FIRST", [("3->8@6", 2, 8, 6, 1)])
    partials = []
    result = cpu_suite.run(rounds=2, on_row=lambda partial: partials.append(json.loads(json.dumps(partial))))
    # After every layer, the rows so far: what a run cut short leaves behind.
    assert [len(p["rows"]) for p in partials] == list(range(1, 13)) and all(p["partial"] for p in partials)
    assert partials[-1]["rows"] == result["rows"] and "partial" not in result
    assert [(r["precision"], r["layer"]) for r in result["rows"]] == [
        (precision, layer) for precision in ("fp32-nhwc", "bf16-nhwc", "fp32-nchw", "bf16-nchw")
        for layer in ("8@6", "dw8@6/s2", "3->8@6")
    ]
    assert set(result["summary"]) >= {"dense/bf16-nhwc/fwd_speedup_geomean", "depthwise/fp32-nchw/bwd_speedup_geomean",
                                      "first/fp32-nhwc/bwd_speedup_geomean"}
    for row in result["rows"]:
        assert row["forward_skeleton_ms"] > 0 and row["fwd_speedup"] > 0
    assert result["machine"]["device"] == "cpu" and result["machine"]["torch"] == torch.__version__
    monkeypatch.setattr(common, "RESULTS", str(tmp_path))
    path = common.write_results("trial.json", result)
    assert json.load(open(path))["rows"][0]["layer"] == "8@6"
    cpu_suite.show(result)


def test_geomean():
    assert common.geomean([2.0, 8.0]) == pytest.approx(4.0)


def test_end_to_end_variants_keep_shapes_and_run(monkeypatch):
    import end_to_end
    import torchvision

    from skeleton_cuda import SkeletonConv2d

    models = end_to_end.variants(lambda: torchvision.models.resnet18(num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    shapes = {name: m(x).shape for name, m in models.items()}
    assert set(shapes.values()) == {torch.Size([2, 10])}
    assert any(isinstance(m, SkeletonConv2d) for m in models["skeleton"].modules())
    assert not any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in models["1x1"].modules()
    )
    tiny = [("tiny", lambda: torchvision.models.resnet18(num_classes=10), 2, 32)]
    monkeypatch.setattr(end_to_end, "CPU_CONFIGS", tiny)
    partials = []
    result = end_to_end.run(torch.device("cpu"), ["eager"], rounds=1, steps=1,
                            on_row=lambda partial: partials.append(len(partial["rows"])))
    assert partials == list(range(1, len(result["rows"]) + 1))
    (row,) = result["rows"]
    assert row["dense_ms"] > 0 and row["skeleton_ms"] > 0 and row["bound"] >= 1.0
    assert end_to_end.run(torch.device("cpu"), ["eager"], rounds=1, steps=1, amp_dtype=torch.bfloat16)["amp"] == "torch.bfloat16"
    nchw = end_to_end.run(torch.device("cpu"), ["eager"], rounds=1, steps=1, memory_format="nchw")
    assert nchw["memory_format"] == "nchw" and nchw["rows"][0]["skeleton_ms"] > 0


def test_gpu_rows_name_the_kernels_that_ran(monkeypatch):
    # The JSON says which of our kernel families a speed came from (csrc/cuda/skeleton_conv2d_cuda.cu
    # routes them): a tensor-core speed must never be read as the default's, or the reverse.
    monkeypatch.delenv("SKELETON_CUDA_DIRECT_KERNELS", raising=False)
    assert gpu_suite.skeleton_path(96, 96, [False] * 3) == "depthwise"
    assert gpu_suite.skeleton_path(1, 64, [True] * 3) == "tensor cores"
    assert gpu_suite.skeleton_path(1, 64, [True] * 3, [True] * 3) == "tensor cores, NCHW kernels"
    assert gpu_suite.skeleton_path(1, 64, [True] * 3, [True, False, True]) == "mixed"
    assert gpu_suite.skeleton_path(1, 64, [True, False, True]) == "mixed"
    assert gpu_suite.skeleton_path(1, 64, [False] * 3) == "tiled"
    assert gpu_suite.row_tiles(3, 0) == "128" and gpu_suite.row_tiles(0, 2) == "64"
    assert gpu_suite.row_tiles(1, 5) == "128+64" and gpu_suite.row_tiles(0, 0) == ""
    monkeypatch.setenv("SKELETON_CUDA_DIRECT_KERNELS", "1")
    assert gpu_suite.skeleton_path(1, 64, [False] * 3) == "direct"
