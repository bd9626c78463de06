"""Ground truth in the formats NAS users hold: NASLib's zero-cost JSON files (both layouts, numbers or
{score, time}) with NASLib's own architecture encodings, and CSVs without arch_index."""
import csv
import json
import math

import numpy as np
import pytest

from zico_fast.spaces.nb101 import NB101Space
from zico_fast.spaces.nb201 import NB201Space
from zico_fast.truth import TruthError, load_truth
from zico_fast.truth_naslib import nb201_arch

NB201 = NB201Space()
DEV_CSV = __import__("pathlib").Path(__import__("zico_fast").__file__).parent / "data" / "nb201_dev.csv"

# Entries as NASLib writes them (values from automl/NASLib naslib/data/zc_nasbench201.json, cifar10).
LATER = {"cifar10": {
    "(0, 2, 3, 2, 3, 1)": {"idx": "534", "arch": "(0, 2, 3, 2, 3, 1)", "val_accuracy": 86.06,
                           "params": {"score": 0.615386, "time": 0.47}, "snip": {"score": 46.002235412597656, "time": 0.69}},
    "(4, 0, 4, 1, 2, 0)": {"idx": "164", "arch": "(4, 0, 4, 1, 2, 0)", "val_accuracy": 83.62,
                           "params": {"score": 0.316346, "time": 0.17}, "snip": {"score": 6.947457313537598, "time": 0.61}},
    "(3, 4, 4, 4, 4, 4)": {"idx": "308", "arch": "(3, 4, 4, 4, 4, 4)", "val_accuracy": 77.66,
                           "params": {"score": 0.101306, "time": 0.48}, "snip": {"score": 6.692233085632324, "time": 0.79}}}}
EARLIER = {"nasbench201": {"cifar100": {"(4, 3, 3, 3, 2, 3)": {"params": 0.434196, "snip": 123.4, "val_accuracy": 68.34},
                                        "(4, 1, 0, 0, 0, 3)": {"params": 0.107156, "snip": 7.48, "val_accuracy": 56.78}},
                           "cifar10": {"(2, 2, 2, 2, 1, 0)": {"params": 1.045466, "snip": 191.4, "val_accuracy": 89.54},
                                       "(1, 3, 4, 2, 3, 2)": {"params": 0.615386, "snip": 56.3, "val_accuracy": 87.66}}}}


def write(tmp_path, data, name="zc_nasbench201.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_nb201_keys_follow_naslibs_edge_order():
    # NASLib's EDGE_LIST ((1,2),(1,3),(1,4),(2,3),(2,4),(3,4)): node 1 from 0, node 2 from 0, node 3 from 0, then
    # node 2 from 1, node 3 from 1, node 3 from 2; ops skip_connect, none, nor_conv_3x3, nor_conv_1x1, avg_pool_3x3
    assert nb201_arch("(0, 2, 3, 2, 3, 1)") == \
        "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|"
    for bad in ("(0, 2, 3)", "(0, 2, 3, 2, 3, 5)", "hello", "[0, 1, 2, 3, 4, 'x']"):
        with pytest.raises(ValueError, match="not NASLib's NB201 encoding"):
            nb201_arch(bad)


def test_bundled_naslib_columns_belong_to_their_rows():
    """The naslib_* columns of nb201_dev.csv are NASLib's values of each row's own cell (regenerated
    from zc_nasbench201.json in NASLib's edge order by validation/scripts/nb201_naslib_columns.py).
    An independent check: NASLib's validation accuracy agrees with NATS-Bench's test accuracy of the
    same row (as first bundled, in the arch string's edge order, all 725 rows held values and rho was 0.42).
    NASLib holds 169 of the 725 cells; the other rows keep only params and FLOPs, which do not depend on
    which edge carries which op (test_nb201 checks them against the builder on every row)."""
    rows = list(csv.DictReader(open(DEV_CSV)))
    held = [r for r in rows if r["naslib_cifar10_valid_acc"]]
    pairs = np.array([(float(r["naslib_cifar10_valid_acc"]), float(r["cifar10_test_acc"])) for r in held]).T
    assert len(rows) == 725 and len(held) == 169
    assert np.corrcoef(pairs)[0, 1] > 0.98
    proxies = [c for c in rows[0] if c.startswith("naslib_") and c not in ("naslib_params", "naslib_flops")]
    assert all(not r[c] for r in rows if not r["naslib_cifar10_valid_acc"] for c in proxies)
    assert all(r["naslib_params"] and r["naslib_flops"] for r in rows)


def test_later_layout_with_score_and_time(tmp_path):
    table = load_truth(write(tmp_path, LATER), NB201, "val_accuracy")
    assert table.column == "cifar10_val_accuracy" and table.compare_columns == ["naslib_params", "naslib_snip"]
    first = table.rows[0]
    assert first.arch == NB201.canonical(nb201_arch("(0, 2, 3, 2, 3, 1)")) and first.truth == 86.06
    assert first.arch_index == NB201.index_of(first.arch) and first.compare["naslib_snip"] == 46.002235412597656
    # NASLib's params (millions) are our analytic count of the same network: a check on the decoding
    assert all(round(NB201.cost(r.arch).params / 1e6, 6) == r.compare["naslib_params"] for r in table.rows)


def test_earlier_layout_picks_cifar10_or_the_named_task(tmp_path):
    path = write(tmp_path, EARLIER)
    assert [r.truth for r in load_truth(path, NB201, "val_accuracy").rows] == [89.54, 87.66]
    c100 = load_truth(f"{path}#cifar100", NB201Space(num_classes=100), "val_accuracy", compare=["params"])
    assert c100.column == "cifar100_val_accuracy" and c100.compare_columns == ["naslib_params"]
    assert all(round(NB201Space(num_classes=100).cost(r.arch).params / 1e6, 6) == r.compare["naslib_params"]
               for r in c100.rows)
    with pytest.raises(TruthError, match="has no task 'imagenet'.*cifar100, cifar10"):
        load_truth(f"{path}#imagenet", NB201, "val_accuracy")


def test_nb101_keys_are_naslibs_tuples(tmp_path):
    row = next(csv.DictReader(open(DEV_CSV.with_name("nb101_dev.csv"))))
    data = {"nasbench101": {"cifar10": {row["arch_tuple"]: {"val_accuracy": float(row["cifar10_val_acc"]),
                                                            "snip": {"score": 1.5, "time": 0.1}}}}}
    table = load_truth(write(tmp_path, data, "zc_nasbench101.json"), NB101Space(), "val_accuracy")
    assert table.rows[0].arch == NB101Space().canonical(row["arch_string"]) and table.rows[0].arch_index == 0
    with pytest.raises(TruthError, match="holds nasbench101 architectures; pass --space nb101"):
        load_truth(tmp_path / "zc_nasbench101.json", NB201, "val_accuracy")


@pytest.mark.parametrize("entry, message", [
    ({"snip": 1.0}, "entry '\\(0, 2, 3, 2, 3, 1\\)' has no 'val_accuracy'"),
    ({"val_accuracy": "high"}, "entry '\\(0, 2, 3, 2, 3, 1\\)': val_accuracy is 'high', not a number"),
    ({"val_accuracy": 80.0, "snip": {"time": 1.0}}, "entry '\\(0, 2, 3, 2, 3, 1\\)': snip is an object without 'score'"),
    ({"val_accuracy": None}, "entry '\\(0, 2, 3, 2, 3, 1\\)': val_accuracy is None; the ground truth must be finite"),
])
def test_every_error_names_the_file_and_the_entry(tmp_path, entry, message):
    path = write(tmp_path, {"cifar10": {"(0, 2, 3, 2, 3, 1)": entry}})
    with pytest.raises(TruthError, match=f"zc_nasbench201.json: nb201/cifar10 {message}"):
        load_truth(path, NB201, "val_accuracy")


def test_a_bad_key_and_a_bad_file_name_the_file(tmp_path):
    path = write(tmp_path, {"cifar10": {"(9, 9)": {"val_accuracy": 1.0}}})
    with pytest.raises(TruthError, match=r"nb201/cifar10 entry '\(9, 9\)': .*not NASLib's NB201 encoding"):
        load_truth(path, NB201, "val_accuracy")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(TruthError, match="broken.json is not JSON"):
        load_truth(tmp_path / "broken.json", NB201, "val_accuracy")


def test_a_csv_without_arch_index(tmp_path):
    path = tmp_path / "t.csv"
    a, b = NB201.arch_from_index(7), NB201.arch_from_index(3)
    path.write_text(f"arch_string,acc\n{a},70\n{b},60\n")
    rows = load_truth(path, NB201, "acc").rows  # an indexed space numbers them by its index
    assert [(r.arch_index, r.truth) for r in rows] == [(7, 70.0), (3, 60.0)]

    class Unnumbered(NB201Space):
        has_index = False

    rows = load_truth(path, Unnumbered(), "acc").rows  # else in file order
    assert [r.arch_index for r in rows] == [0, 1] and not math.isnan(rows[1].truth)


def test_nb301_keys_are_naslibs_compact_genotypes(tmp_path):
    from zico_fast.spaces import get_space

    darts = get_space("darts")
    row = next(csv.DictReader(open(DEV_CSV.with_name("nb301_dev.csv"))))
    key = str(tuple(tuple(cell) for cell in __import__("ast").literal_eval(row["arch_string"])))  # as NASLib keys it
    data = {"nasbench301": {"cifar10": {key: {"val_accuracy": float(row["cifar10_val_acc"]), "snip": 2.0}}}}
    table = load_truth(write(tmp_path, data, "zc_nasbench301.json"), darts, "val_accuracy")
    assert table.rows[0].arch == darts.canonical(row["arch_string"]) and table.rows[0].arch_index == 0
