"""python -m skeleton_cuda.train: runs, records, resumes, loads data, and trains under torchrun."""

import json
import os
import subprocess
import sys

import pytest
import torch

from skeleton_cuda import SkeletonConv2d
from skeleton_cuda.train import Run, main, parse_args
from skeleton_cuda.training import checkpoint, data
from skeleton_cuda.training.distributed import DistEnv
from skeleton_cuda.training.models import build_model, resolve_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny, fast configuration: 512 synthetic 32x32 images, the 'small' CNN at width 8.
QUICK = ["--model", "small", "--width", "8", "--dataset", "synthetic", "--batch-size", "64",
         "--workers", "0", "--quiet"]


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


def _metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_one_synthetic_epoch_writes_metrics_and_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    record = main(QUICK + ["--epochs", "1", "--output", out])
    lines = _metrics(out)
    assert len(lines) == 1 and lines[0] == record
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "images_per_s", "epoch_time_s", "lr"):
        assert isinstance(record[key], float), key
    assert record["epoch"] == 1 and record["train_images"] == 512 and record["test_images"] == 256
    assert 0 <= record["test_acc"] <= 1 and record["images_per_s"] > 0
    state = checkpoint.load(os.path.join(out, "last.pt"))  # weights_only: plain tensors and containers
    assert state["epoch"] == 1
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "args"} <= set(state)
    assert os.path.exists(os.path.join(out, "config.json"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert os.path.getsize(os.path.join(out, "curves.png")) > 0


def test_resume_continues_from_the_saved_epoch(tmp_path):
    out = str(tmp_path / "run")
    main(QUICK + ["--epochs", "1", "--output", out])
    first = _metrics(out)
    main(QUICK + ["--epochs", "3", "--output", out, "--resume"])
    lines = _metrics(out)
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert lines[0] == first[0]  # appended, not rewritten
    assert checkpoint.load(os.path.join(out, "last.pt"))["epoch"] == 3
    # Nothing left to do: the record stays as it is.
    main(QUICK + ["--epochs", "3", "--output", out, "--resume"])
    assert len(_metrics(out)) == 3


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    # Uninterrupted: 2 epochs. Interrupted: stopped after epoch 1, then --resume. The second
    # epoch must be the same (model, optimizer, scheduler and RNG states all restored).
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    args = QUICK + ["--epochs", "2"]
    main(args + ["--output", whole])

    original = Run._epoch

    def stop_at_second(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Run, "_epoch", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        main(args + ["--output", cut])
    monkeypatch.setattr(Run, "_epoch", original)
    assert len(_metrics(cut)) == 1
    main(args + ["--output", cut, "--resume"])
    for a, b in zip(_metrics(whole), _metrics(cut)):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            assert a[key] == b[key], (a["epoch"], key)


def test_resume_follows_the_new_runs_schedule_and_settings(tmp_path):
    # Resumed with another batch size (so another number of steps per epoch), a longer --epochs and
    # another --lr and momentum: the schedule is the new run's from the epoch reached, its first step
    # included, and it ends at 0; the optimizer runs with the new settings.
    out = str(tmp_path / "run")
    main(QUICK + ["--epochs", "2", "--output", out])
    quick32 = list(QUICK)
    quick32[quick32.index("--batch-size") + 1] = "32"
    run = Run(parse_args(quick32 + ["--epochs", "4", "--output", out, "--resume", "--lr", "0.05", "--momentum", "0.5"]),
              DistEnv())
    steps = len(run.train_loader)
    assert steps == 16 and run.scheduler.last_epoch == 2 * steps  # 512 images, 32 a step
    group = run.optimizer.param_groups[0]
    assert group["momentum"] == 0.5 and group["lr"] == pytest.approx(0.05 * 0.5)  # half-way down the cosine
    run.fit()
    lines = _metrics(out)
    assert [r["lr"] for r in lines[2:]] == pytest.approx([0.05 * 0.5, 0.05 * 0.5 * (1 - 2**-0.5)])
    assert run.scheduler.last_epoch == 4 * steps and run.optimizer.param_groups[0]["lr"] == pytest.approx(0, abs=1e-12)


def test_resume_may_switch_to_fp16_loss_scaling(tmp_path):
    out = str(tmp_path / "run")
    main(QUICK + ["--epochs", "1", "--output", out])  # no GradScaler state saved
    main(QUICK + ["--epochs", "2", "--output", out, "--resume", "--amp", "fp16"])
    assert [r["epoch"] for r in _metrics(out)] == [1, 2]


def test_resume_refuses_another_model_or_a_missing_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(QUICK + ["--epochs", "1", "--output", out, "--resume"])
    main(QUICK + ["--epochs", "1", "--output", out])
    with pytest.raises(SystemExit, match="--skeleton"):
        main(QUICK + ["--epochs", "2", "--output", out, "--resume", "--skeleton"])


def test_skeleton_flag_converts_every_3x3_convolution(tmp_path):
    args = parse_args(QUICK + ["--epochs", "1", "--output", str(tmp_path), "--skeleton"])
    run = Run(args, DistEnv())
    convs = [m for m in run.model.modules() if isinstance(m, (SkeletonConv2d, torch.nn.Conv2d))]
    assert len(convs) == 6 and all(isinstance(m, SkeletonConv2d) for m in convs)
    assert run.info["skeleton_convs"] == 6 and run.info["dense_3x3_convs"] == 0
    record = run.fit()
    assert record["skeleton"] is True
    dense = Run(parse_args(QUICK + ["--epochs", "1", "--output", str(tmp_path / "d")]), DistEnv())
    assert dense.info["skeleton_convs"] == 0 and dense.info["dense_3x3_convs"] == 6
    assert run.info["params"] < dense.info["params"]


def test_model_names_resolve():
    assert any(isinstance(m, SkeletonConv2d) for m in build_model("vgg16", 10, skeleton=True).modules())
    resnet = build_model("resnet18", 7)  # torchvision, weights=None
    assert resnet.fc.out_features == 7
    with pytest.raises(ValueError, match="unknown model"):
        build_model("no-such-model", 10)
    # A name the zoo and torchvision share: the zoo's 32x32 model, torchvision's for full-size
    # images, either one by asking (as skeleton_cuda.profile spells the zoo's).
    assert resolve_model("resnet50") == resolve_model("cifar-resnet50") == ("cifar", "resnet50")
    assert resolve_model("resnet50", full_size_images=True) == ("torchvision", "resnet50")
    assert resolve_model("cifar-resnet50", full_size_images=True) == ("cifar", "resnet50")
    assert resolve_model("wrn40", full_size_images=True)[0] == "cifar"  # torchvision has none
    with pytest.raises(ValueError, match="the CIFAR zoo has"):
        resolve_model("cifar-resnet18x")
    # Spelling: case, "-" and "_" do not matter, for either family.
    assert resolve_model("ResNet50", full_size_images=True) == ("torchvision", "resnet50")
    assert resolve_model("VGG16") == resolve_model("CIFAR_VGG16") == ("cifar", "vgg16")
    assert resolve_model("ResNet18") == ("torchvision", "resnet18")


def test_zoo_models_need_no_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision raises ImportError
    assert resolve_model("resnet50", full_size_images=True) == ("cifar", "resnet50")
    assert build_model("resnet50", 10).__class__.__name__.lower().startswith("cifar")
    with pytest.raises(ValueError, match="torchvision is not installed"):
        resolve_model("resnet18")


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="unknown model 'cifar-nope'"):
        main(QUICK + ["--epochs", "1", "--output", str(tmp_path), "--model", "cifar-nope"])


def test_bf16_autocast_and_channels_last_run(tmp_path):
    record = main(QUICK + ["--epochs", "1", "--output", str(tmp_path), "--amp", "bf16", "--channels-last", "--skeleton"])
    assert record["train_loss"] == record["train_loss"]  # not NaN


def test_digits_load_with_the_right_shapes():
    pytest.importorskip("sklearn")
    sets = data.load_datasets("digits")
    assert (len(sets.train), len(sets.test), sets.num_classes) == (1347, 450, 10)
    image, label = sets.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    test_image, _ = sets.test[0]
    assert test_image.shape == (3, 32, 32)
    # The split is fixed and stratified: every class in both halves.
    assert set(sets.test.labels.tolist()) == set(range(10))
    (train_x, _), (test_x, _) = data.digits_tensors()
    assert train_x.shape == (1347, 3, 32, 32) and test_x.shape == (450, 3, 32, 32)
    assert torch.equal(train_x[:, 0], train_x[:, 2])  # grey replicated to 3 channels


def test_missing_cifar_folder_says_how_to_provide_it(tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--epochs", "1",
              "--output", str(tmp_path / "out"), "--quiet"])
    message = str(excinfo.value.code)
    assert "cifar-10-batches-py" in message and "download=True" in message and "--data-dir" in message
    with pytest.raises(data.DatasetUnavailable, match="cifar-100-python"):
        data.load_datasets("cifar100", str(tmp_path))


def test_missing_imagefolder_says_what_it_needs(tmp_path):
    with pytest.raises(data.DatasetUnavailable, match="train"):
        data.load_datasets("imagefolder", str(tmp_path))


def test_two_process_ddp_on_cpu_with_gloo(tmp_path):
    out = str(tmp_path / "ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "skeleton_cuda.train", *QUICK, "--epochs", "2", "--device", "cpu", "--output", out]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    # Every failure message carries the processes' output: a rare failure here must explain itself.
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    lines = _metrics(out)
    assert [r["epoch"] for r in lines] == [1, 2], (lines, output)  # written once, by rank 0
    for record in lines:
        assert record["world_size"] == 2, (record, output)
        # Both processes' images are counted: the whole training set and each test image once.
        assert record["train_images"] == 512 and record["test_images"] == 256, (record, output)
    state = checkpoint.load(os.path.join(out, "last.pt"))
    assert state["epoch"] == 2 and len(state["rng"]) == 2, (state["epoch"], len(state["rng"]), output)


def test_accuracy_parity_script_runs(tmp_path):
    pytest.importorskip("sklearn")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import accuracy_parity
    finally:
        sys.path.pop(0)
    result = accuracy_parity.main(["--epochs", "1", "--width", "4", "--seeds", "0", "1",
                                   "--results-dir", str(tmp_path), "--output", "parity.json"])
    saved = json.load(open(tmp_path / "parity.json"))
    assert saved["seeds"] == [0, 1] and len(saved["test_acc"]["dense"]) == len(saved["test_acc"]["skeleton"]) == 2
    assert saved["params"]["skeleton"] < saved["params"]["dense"]
    gap = saved["summary"]["skeleton"]["mean"] - saved["summary"]["dense"]["mean"]
    assert abs(saved["gap_skeleton_minus_dense"] - gap) < 1e-12 and result["dataset"] == "digits"
