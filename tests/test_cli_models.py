"""`zico-fast score --model`: a user's factory or model that cannot be scored is one line (exit 2)
naming what to fix, and the user's file is left as it was."""
import pytest

from test_cli import SMALL, one_thread  # noqa: F401  (one_thread: the autouse fixture applies here too)
from zico_fast.cli import main


def test_model_factory_that_needs_arguments_says_so(tmp_path, capsys):
    (tmp_path / "nets.py").write_text("def needs(width):\n    return None\n")
    assert main(["score", "--model", f"{tmp_path / 'nets.py'}:needs", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "needs(width) needs arguments" in err and err.count("\n") == 1


BROKEN_MODELS = {
    "syntax.py": ("def f(:\n", "f", "line 1: invalid syntax"),
    "raises_on_import.py": ("raise RuntimeError('no weights file')\n", "f",
                            "importing {path} raised RuntimeError: no weights file (python {path} shows where)"),
    "factory_raises.py": ("def f():\n    raise ValueError('bad width')\n", "f",
                          "the factory raised ValueError: bad width"),
    "no_layers.py": ("import torch.nn as nn\ndef f():\n    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())\n",
                     "f", "the model has no layer ZiCo can score"),
    "wrong_shape.py": ("import torch.nn as nn\ndef f():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), "
                       "nn.Linear(7, 10))\n", "f", "failed on inputs of shape (8, 3, 32, 32): RuntimeError: mat1"),
    "lazy.py": ("import torch.nn as nn\ndef f():\n    return nn.Sequential(nn.Flatten(), nn.LazyLinear(10))\n",
                "f", "layer '1' is lazy and has no weights yet"),
    "weight_norm.py": ("import torch.nn as nn\nfrom torch.nn.utils.parametrizations import weight_norm\ndef f():\n"
                       "    return nn.Sequential(nn.Flatten(), weight_norm(nn.Linear(3072, 10)))\n",
                       "f", "layer '1' has a computed weight"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_MODELS))
def test_broken_user_model_is_one_line(name, tmp_path, capsys):
    source, factory, message = BROKEN_MODELS[name]
    path = tmp_path / name
    path.write_text(source)
    assert main(["score", "--model", f"{path}:{factory}", *SMALL]) == 2
    err = capsys.readouterr().err
    assert message.format(path=path) in err and err.count("\n") == 1 and "Traceback" not in err
    assert path.read_text() == source


@pytest.mark.parametrize("allocate", ["cpu", "cuda-like"])
def test_out_of_memory_is_one_line(allocate, monkeypatch, capsys):
    import torch
    from zico_fast import commands

    def score(args):
        if allocate == "cpu":  # a real failed allocation: 1 EiB is beyond any machine's address space
            torch.empty(2**60, dtype=torch.uint8)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    monkeypatch.setattr(commands, "score", score)
    assert main(["score", "--index", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: out of memory (" in err and "smaller --batch-size" in err


def test_other_runtime_errors_still_show_their_traceback(monkeypatch):
    from zico_fast import commands

    def score(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(commands, "score", score)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["score", "--index", "3"])
