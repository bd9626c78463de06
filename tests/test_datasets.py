"""Data sets as one choice (--dataset cifar10|cifar100: images, outputs, normalisation, truth column)
and the bundled tables correlate names (nb101-uniform)."""
import json

import numpy as np
import pytest
import torch

from zico_fast.cli import main
from zico_fast.correlate import correlate
from zico_fast.data import DATASETS, make_batches
from zico_fast.errors import ZiCoUserError
from zico_fast.spaces.nb101 import NB101Space
from zico_fast.spaces.nb201 import NB201Space
from zico_fast.truth import (TruthError, check_column_dataset, default_truth_column, load_truth, resolve_truth,
                             sample_rows)

SMALL = ["--batch-size", "8", "--device", "cpu"]
UNIFORM = resolve_truth("nb101-uniform", "nb101")


from testing import one_thread  # noqa: E402,F401  (the fixture, used by every test here)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cifar100_batches_hold_its_labels_and_its_normalisation():
    batches = make_batches(batch_size=128, num_batches=2, seed=0, dataset="cifar100")
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (256, 3, 32, 32) and int(y.min()) >= 0 and int(y.max()) <= 99
    assert len(set(y.tolist())) > 80  # 256 draws from 100 classes of 20 images: not one class's run
    with np.load(DATASETS["cifar100"].bundle) as data:
        images, labels = data["x"], data["y"]
    assert images.shape == (2000, 32, 32, 3) and np.bincount(labels).tolist() == [20] * 100
    pick = torch.randperm(2000, generator=torch.Generator().manual_seed(0))[:256].numpy()
    raw = torch.from_numpy(images[pick]).permute(0, 3, 1, 2).double() / 255
    mean = torch.tensor([0.5071, 0.4865, 0.4409], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.2673, 0.2564, 0.2762], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(x.double(), (raw - mean) / std, rtol=0, atol=1e-5)
    assert y.tolist() == labels[pick].tolist()


def test_cifar10_stays_the_default():
    for (xa, ya), (xb, yb) in zip(make_batches(batch_size=8), make_batches(batch_size=8, dataset="cifar10")):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ZiCoUserError, match="unknown data set"):
        make_batches(batch_size=8, dataset="imagenet")


def test_own_images_take_the_named_datasets_normalisation(tmp_path):
    """--data replaces only the images: --dataset still picks the mean/std (and the outputs)."""
    pixels = np.full((4, 2, 2, 3), 255, np.uint8)
    np.savez(tmp_path / "own.npz", x=pixels, y=np.array([0, 1, 98, 99]))
    for name, stats in DATASETS.items():
        (x, y), _ = make_batches(tmp_path / "own.npz", batch_size=2, num_batches=2, dataset=name)
        want = (1 - torch.tensor(stats.mean)) / torch.tensor(stats.std)
        torch.testing.assert_close(x[0, :, 0, 0], want)


def test_score_with_cifar100_builds_a_100_output_network(tmp_path):
    out = tmp_path / "score.json"
    assert main(["score", "--index", "3", "--dataset", "cifar100", "--out", str(out), *SMALL]) == 0
    report = json.loads(out.read_text())
    arch = NB201Space().arch_from_index(3)
    assert report["params"] == NB201Space(num_classes=100).cost(arch).params != NB201Space().cost(arch).params
    assert report["data"]["dataset"] == "cifar100" and report["data"]["source"] == "bundled"


@pytest.mark.parametrize("args, message", [
    (["score", "--index", "3", "--dataset", "cifar100", "--num-classes", "10"], "--dataset cifar100 has 100 classes"),
    (["score", "--index", "3", "--num-classes", "100"], "pass --dataset cifar100"),
    (["score", "--index", "3", "--data", "{npz}", "--dataset", "cifar100", "--num-classes", "10"],
     "--dataset cifar100 has 100 classes"),
    (["search", "--dataset", "cifar10", "--num-classes", "100", "--out", "{tmp}"], "has 10 classes"),
    (["correlate", "--dataset", "cifar100", "--truth-column", "cifar10_test_acc", "--out", "{tmp}"],
     "holds cifar10 accuracies but the networks are scored on cifar100"),
    (["correlate", "--truth-column", "cifar100_test_acc", "--out", "{tmp}"], "pass --dataset cifar100"),
    (["correlate", "--space", "nb101", "--dataset", "cifar100", "--out", "{tmp}"], "no cifar100 accuracies"),
    (["correlate", "--truth", "nb101-uniform", "--out", "{tmp}"], "pass --space nb101"),
])
def test_dataset_mismatches_are_one_line_exit_2(args, message, tmp_path, capsys):
    npz = tmp_path / "own.npz"
    np.savez(npz, x=np.zeros((16, 32, 32, 3), np.uint8), y=np.arange(16) % 10)
    args = [a.replace("{tmp}", str(tmp_path / "run")).replace("{npz}", str(npz)) for a in args]
    assert main(args + SMALL + ["--no-progress"] * (args[0] != "score")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_own_data_without_dataset_keeps_num_classes_free(tmp_path, capsys):
    npz = tmp_path / "own.npz"
    np.savez(npz, x=np.zeros((16, 32, 32, 3), np.uint8), y=np.arange(16) % 12)
    assert main(["score", "--index", "3", "--data", str(npz), "--num-classes", "12", *SMALL]) == 0


def test_default_truth_column_follows_the_dataset():
    assert default_truth_column("nb201") == "cifar10_test_acc"
    assert default_truth_column("nb201", "cifar100") == "cifar100_test_acc"
    assert default_truth_column("nb101") == "cifar10_val_acc"
    with pytest.raises(TruthError, match="CIFAR-10 only"):
        default_truth_column("nb101", "cifar100")
    check_column_dataset("imagenet16_test_acc", "cifar100")  # not a CIFAR column: the user's choice
    with pytest.raises(TruthError, match="holds cifar10 accuracies"):
        check_column_dataset("naslib_cifar10_valid_acc", "cifar100")


@pytest.mark.filterwarnings("ignore::zico_fast.ranking.FewRowsWarning")  # a few rows on purpose
def test_correlate_cifar100_end_to_end_and_a_resume_with_cifar10_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["correlate", "--sample", "3", "--out", str(out), "--no-progress", *SMALL]
    assert main(args + ["--dataset", "cifar100"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["truth_column"] == "cifar100_test_acc" and report["data"]["dataset"] == "cifar100"
    assert report["settings"]["space"]["options"]["num_classes"] == 100
    log = (out / "scores.jsonl").read_text()
    capsys.readouterr()
    assert main(args) == 2  # the default data set, cifar10
    err = capsys.readouterr().err
    assert "was written with other settings" in err and "space.options.num_classes: 100 -> 10" in err
    assert err.count("\n") == 1
    assert (out / "scores.jsonl").read_text() == log


def test_nb101_uniform_table_loads_every_row_with_nb101s_own_param_count():
    space = NB101Space()
    table = load_truth(UNIFORM, space, default_truth_column("nb101"))
    assert len(table.rows) == 1000 and table.compare_columns == ["nb101_trainable_params"]
    assert all(space.cost(r.arch).params == r.compare["nb101_trainable_params"] for r in table.rows)
    first = [r.arch_index for r in sample_rows(table.rows, 400, 0)]
    assert first == [r.arch_index for r in sample_rows(table.rows, 400, 0)] and len(set(first)) == 400
    assert first != [r.arch_index for r in sample_rows(table.rows, 400, 1)]


@pytest.mark.filterwarnings("ignore::zico_fast.ranking.FewRowsWarning")  # a few rows on purpose
def test_correlate_names_the_uniform_table(tmp_path):
    space = NB101Space(stem=8, stacks=1, cells_per_stack=1)  # small networks, same cells
    batches = [make_batches(batch_size=4, num_batches=2)]
    result = correlate(space, batches, log_path=tmp_path / "scores.jsonl", truth="nb101-uniform", sample=3)
    assert result.report["truth_file"] == "nb101_uniform_dev.csv" and result.report["n"] == 3
    assert result.report["truth_column"] == "cifar10_val_acc"
    assert "nb101_trainable_params" in result.report["correlations"]
