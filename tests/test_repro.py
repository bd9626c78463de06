"""The reproducibility record: the layout of the passes is a setting (a resume with another is
refused), the machine is a fact (logged, a resume elsewhere warns, never refuses)."""
import json

import pytest
import torch

from zico_fast.cli import main
from zico_fast.engine.repro import machine, other_machine_warning, record
from zico_fast.layout import with_layout
from test_scorer import make_batches

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
SMALL = ["--batch-size", "8", "--device", "cpu", "--no-progress"]


from testing import one_thread  # noqa: E402,F401  (the fixture, used by every test here)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_record_names_a_channels_last_layout_and_not_the_machine():
    batches = make_batches(2)
    nchw, channels_last = record("cpu", 1, batches), record("cpu", 1, with_layout(batches, "channels_last"))
    assert "layout" not in nchw  # as in logs from before layouts were recorded: they still resume
    assert channels_last["layout"] == "channels_last"
    assert channels_last["batches"] == nchw["batches"]  # the same images, whatever their layout
    assert not {"cpu", "gpu", "cpu_isa"} & set(nchw)


def test_machine_facts_and_the_warning_for_another_machine():
    here = machine("cpu")
    assert here["cpu"] and here["cpu_isa"] == torch.backends.cpu.get_cpu_capability()
    assert other_machine_warning(here, here) is None and other_machine_warning(None, here) is None
    other = {**here, "cpu": "AMD EPYC 7B13", "cpu_isa": "AVX2"}
    line = other_machine_warning(other, here)
    assert "\n" not in line and "'AMD EPYC 7B13' -> " in line and "cpu_isa: 'AVX2' -> " in line


def test_score_reports_its_layout_and_machine(tmp_path, capsys):
    assert main(["score", "--arch", ARCH, "--layout", "channels_last", "--out", "-", *SMALL[:-1]]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["repro"]["layout"] == "channels_last" and report["machine"] == machine("cpu")
    assert main(["score", "--arch", ARCH, "--layout", "contiguous", "--out", "-", *SMALL[:-1]]) == 0
    assert "layout" not in json.loads(capsys.readouterr().out)["repro"]


def test_a_resume_with_another_layout_is_refused(tmp_path, capsys):
    args = ["search", "--space", "nb201", "--iterations", "1", "--population", "2", "--out", str(tmp_path), *SMALL]
    assert main(args + ["--layout", "channels_last"]) == 0
    header = json.loads((tmp_path / "search.jsonl").read_text().splitlines()[0])
    assert header["settings"]["repro"]["layout"] == "channels_last"
    assert main(args + ["--layout", "contiguous"]) == 2
    assert "repro.layout: 'channels_last' -> None" in capsys.readouterr().err
    assert main(args + ["--layout", "auto"]) == 0  # nb201 on the CPU: channels_last, measured


def test_a_resume_on_another_cpu_warns_in_one_line_and_goes_on(tmp_path, capsys):
    args = ["search", "--space", "nb201", "--population", "2", "--out", str(tmp_path), *SMALL]
    assert main(args + ["--iterations", "1"]) == 0
    log = tmp_path / "search.jsonl"
    header, *records = log.read_text().splitlines()
    header = json.loads(header)
    assert header["machine"] == machine("cpu") and "machine" not in header["settings"]["repro"]
    header["machine"] = {**header["machine"], "cpu": "AMD EPYC 7B13", "cpu_isa": "AVX2"}
    log.write_text("\n".join([json.dumps(header), *records]) + "\n")
    capsys.readouterr()
    assert main(args + ["--iterations", "2"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "another machine type" in line]
    assert len(warned) == 1 and warned[0].startswith("zico-fast: warning: this run resumes on another machine type")
    assert len(log.read_text().splitlines()) == 3  # resumed: the logged candidate kept, one more scored
