"""The README's quick start runs as written."""

import os
import re

import torch

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
    return re.findall(r"```python\n(.*?)```", open(README).read(), flags=re.S)


def test_python_examples_run():
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace = {}
    for i, block in enumerate(blocks):
        # Smaller images than the README's, same code.
        exec(compile(block.replace("224, 224", "64, 64"), f"README python block {i}", "exec"), namespace)
    assert isinstance(namespace["dense"], torch.nn.Module)
    assert namespace["model"].conv1.weight.grad is not None
    assert namespace["y"].shape == (2, 32, 32, 32)
