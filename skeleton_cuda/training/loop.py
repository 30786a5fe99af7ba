"""One epoch of training and one pass of evaluation, with AMP and channels_last."""

import contextlib
import math
import time

import torch

from .progress import ProgressBar

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device, amp):
    """torch.autocast for --amp bf16|fp16, nothing for --amp none."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(device, amp):
    """A GradScaler for fp16 (whose small range needs loss scaling); a pass-through otherwise."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def warmup_cosine(total_steps, warmup_steps=0):
    """LR factor per optimizer step: linear warm-up, then cosine decay to 0 at total_steps.
    A closed form of the step number, so resuming with a different --epochs just works."""

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _to_device(images, labels, device, channels_last):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    return images, labels.to(device, non_blocking=True)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Totals:
    """Loss sum, correct count and image count, kept on the device (no sync per step)."""

    def __init__(self, device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0

    def add(self, loss, logits, labels):
        n = labels.shape[0]
        self.loss += loss.detach().double() * n
        self.correct += (logits.argmax(1) == labels).sum()
        self.count += n

    def info(self):
        if not self.count:
            return ""
        return f"loss {self.loss.item() / self.count:.4f} acc {100 * self.correct.item() / self.count:.2f}%"

    def as_list(self):
        return [self.loss.item(), float(self.correct.item()), float(self.count)]


def train_one_epoch(model, loader, criterion, optimizer, scheduler, scaler, device, amp="none",
                    channels_last=False, label="train", show_progress=False):
    """Trains for one pass over ``loader``; the scheduler steps after every optimizer step.
    Returns [loss sum, correct, images] of this process and the seconds it took."""
    model.train()
    totals = _Totals(device)
    bar = ProgressBar(len(loader), label, enabled=show_progress)
    _sync(device)
    start = time.perf_counter()
    for step, (images, labels) in enumerate(loader, 1):
        images, labels = _to_device(images, labels, device, channels_last)
        with autocast(device, amp):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        totals.add(loss, logits, labels)
        bar.update(step, totals.info)
    _sync(device)
    seconds = time.perf_counter() - start
    bar.close()
    return totals.as_list(), seconds


@torch.no_grad()
def evaluate(model, loader, criterion, device, amp="none", channels_last=False, label="test", show_progress=False):
    """[loss sum, correct, images] of this process over ``loader``, in eval mode."""
    model.eval()
    totals = _Totals(device)
    bar = ProgressBar(len(loader), label, enabled=show_progress)
    for step, (images, labels) in enumerate(loader, 1):
        images, labels = _to_device(images, labels, device, channels_last)
        with autocast(device, amp):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        totals.add(loss, logits, labels)
        bar.update(step, totals.info)
    bar.close()
    return totals.as_list()
