"""The pieces of ``python -m skeleton_cuda.train``: data sets, models, the training loop,
checkpoints, metrics, distributed set-up and a progress bar. ``skeleton_cuda/train.py`` wires them.
"""
