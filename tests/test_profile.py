"""skeleton_cuda.profile: the paper's ImageNet table (Zhuang et al., Table 2) and the CLI."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from skeleton_cuda import SkeletonConv2d
from skeleton_cuda.profile import PAPER_TABLE2, build, compare_imagenet, count, profile_model


@pytest.mark.parametrize("name", list(PAPER_TABLE2))
def test_imagenet_table_within_one_percent(name):
    paper = PAPER_TABLE2[name]
    result = profile_model(name)
    for index, variant in enumerate(("dense", "skeleton")):
        measured = result[variant]
        assert measured["params"] / 1e6 == pytest.approx(paper["params"][index], rel=0.01)
        assert measured["macs"] / 1e9 == pytest.approx(paper["gflops"][index], rel=0.01)
        # thop's rule (MACs + BatchNorm) reproduces the paper's figures to the printed digit.
        assert round(measured["thop_flops"] / 1e9, 2) == paper["gflops"][index]
        assert round(measured["params"] / 1e6, 2) == paper["params"][index]


def test_compare_imagenet_all_within():
    assert all(row["within_1pct"] for row in compare_imagenet())


def test_resnet18_exact_counts():
    result = profile_model("resnet18")
    assert result["dense"]["params"] == 11_689_512
    assert result["dense"]["macs"] == 1_814_073_344
    assert result["skeleton"]["skeleton_macs"] == result["dense"]["conv3x3_macs"] * 5 // 9
    assert result["skeleton"]["conv3x3_macs"] == 0


def test_count_rules_on_cpu():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 8*8*8 outputs x 3*9
        nn.BatchNorm2d(8),
        SkeletonConv2d(8, 8, stride=2, groups=2),  # 8*4*4 outputs x 4*5, with bias
        nn.Conv2d(8, 4, 1),  # 4*4*4 x 8, with bias
        nn.Flatten(),
        nn.Linear(64, 10),  # 10 x 64, with bias
    )
    model.train()
    result = count(model, (2, 3, 8, 8))  # per image: the batch of 2 is divided out
    assert model.training
    assert result["conv3x3_macs"] == 512 * 27
    assert result["skeleton_macs"] == 128 * 20
    assert result["other_conv_macs"] == 64 * 8
    assert result["linear_macs"] == 640
    assert result["macs"] == 512 * 27 + 128 * 20 + 64 * 8 + 640
    assert result["bias_adds"] == 128 + 64 + 10
    assert result["norm_ops"] == 2 * 512
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["skeleton_params"] == 8 * 4 * 5


def test_count_multihead_attention():
    attention = nn.MultiheadAttention(16, 2, batch_first=True)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = attention

        def forward(self, x):
            tokens = x.flatten(2).transpose(1, 2)  # (N, 9 tokens, 3 features)
            tokens = nn.functional.pad(tokens, (0, 13))  # 16 features
            return self.attention(tokens, tokens, tokens)[0]

    result = count(Block(), (1, 3, 3, 3))
    tokens, embed = 9, 16
    assert result["linear_macs"] == 4 * tokens * embed * embed
    assert result["attention_macs"] == 2 * tokens * tokens * embed


def test_build_meta_and_cifar_prefix():
    model = build("cifar-vgg16", skeleton=True)
    assert next(model.parameters()).device.type == "meta"
    assert any(isinstance(m, SkeletonConv2d) for m in model.modules())
    result = profile_model("cifar-vgg16")
    assert result["input_shape"] == [1, 3, 32, 32]
    assert round(result["skeleton"]["params"] / 1e6, 2) == 8.19


def test_other_torchvision_model_and_options():
    result = profile_model("mobilenet_v2", num_classes=10, input_size=160)
    assert result["input_shape"] == [1, 3, 160, 160]
    assert result["dense"]["params"] > result["skeleton"]["params"]
    with torch.device("meta"):
        fc = build("mobilenet_v2", num_classes=10).classifier[-1]
    assert fc.out_features == 10


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "skeleton_cuda.profile", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_resnet18(tmp_path):
    path = tmp_path / "resnet18.json"
    proc = _run_cli("--model", "resnet18", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    params = next(line for line in lines if line.startswith("parameters (M)")).split()
    gflops = next(line for line in lines if line.startswith("GFLOPs (MACs)")).split()
    assert params[2:] == ["11.690", "6.807", "41.8%"]
    assert gflops[2:] == ["1.814", "1.069", "41.1%"]
    assert "multiply-adds" in proc.stdout
    data = json.loads(path.read_text())
    assert data["dense"]["params"] == 11_689_512
    assert data["skeleton"]["macs"] == 1_069_060_096


def test_cli_errors():
    proc = _run_cli("--model", "cifar-nosuch")
    assert proc.returncode == 2 and "unknown model" in proc.stderr
    proc = _run_cli("--model", "all", "--input-size", "64")
    assert proc.returncode == 2
