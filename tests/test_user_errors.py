"""Mistakes a user can make with zico_score: each gives one clear message naming the way out,
never a silent wrong score."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zico_fast
from test_scorer import Net, make_batches, oracle_score
from zico_fast.errors import ZiCoUserError


def regression_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))


def regression_batches(n=3):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 5, generator=gen), torch.randn(6, 1, generator=gen)) for _ in range(n)]


def test_regression_with_cross_entropy_is_an_error_naming_mse():
    with pytest.raises(ZiCoUserError, match=r"one output per sample.*loss_fn=F\.mse_loss"):
        zico_fast.zico_score(regression_model(), regression_batches())
    model, batches = regression_model(), regression_batches()
    result = zico_fast.zico_score(model, batches, loss_fn=F.mse_loss)
    assert result.score == pytest.approx(oracle_score_mse(model, batches), rel=1e-5) and result.score != 0


def oracle_score_mse(model, batches):
    from zico_fast.reference import gradient_stacks, zico_oracle
    return zico_oracle(gradient_stacks(model, batches, loss_fn=F.mse_loss))[0]


def test_same_batch_twice_is_an_error():
    batch = make_batches(1)[0]
    with pytest.raises(ZiCoUserError, match="batch 1 is the same inputs tensor as batch 0"):
        zico_fast.zico_score(Net(), [batch, batch])


def test_all_zero_spread_warns_with_what_to_check():
    x, y = make_batches(1)[0]
    with pytest.warns(zico_fast.ZeroSpreadWarning, match=r"score is 0: all 2 batches.*same loss: are the batches identical"):
        result = zico_fast.zico_score(Net(), [(x, y), (x.clone(), y.clone())])
    assert result.score == 0 and not result.layer_terms
    assert all("zero gradient std" in why for name, why in result.skipped.items() if name not in ("unused", "hidden_again"))


def test_loss_that_ignores_the_output_warns():
    with pytest.warns(zico_fast.ZeroSpreadWarning, match="loss_fn uses the model's output"):
        zico_fast.zico_score(Net(), make_batches(2), loss_fn=lambda logits, y: (logits * 0).sum())


def test_no_warning_for_an_ordinary_score():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zico_fast.zico_score(Net(), make_batches(2))


def test_batches_of_three_items_and_dicts_name_unpack_batch():
    model = Net()
    triples = [(x, y, torch.arange(len(y))) for x, y in make_batches(2)]
    with pytest.raises(ZiCoUserError, match=r"tuple of 3 items.*unpack_batch=lambda b: \(b\[0\], b\[1\]\)"):
        zico_fast.zico_score(model, triples)
    dicts = [{"image": x, "label": y} for x, y in make_batches(2)]
    with pytest.raises(ZiCoUserError, match=r"dict with keys \['image', 'label'\].*unpack_batch"):
        zico_fast.zico_score(model, dicts)
    want = zico_fast.zico_score(model, make_batches(2)).score
    assert zico_fast.zico_score(model, triples, unpack_batch=lambda b: (b[0], b[1])).score == want
    assert zico_fast.zico_score(model, dicts, unpack_batch=lambda b: (b["image"], b["label"])).score == want
    with pytest.raises(ZiCoUserError, match="must return"):
        zico_fast.zico_score(model, dicts, unpack_batch=lambda b: b["image"])


class TupleOutput(nn.Module):
    def __init__(self, as_dict=False):
        super().__init__()
        self.net, self.as_dict = Net(), as_dict

    def forward(self, x):
        logits = self.net(x)
        return {"logits": logits, "aux": logits.mean()} if self.as_dict else (logits, logits.mean())


@pytest.mark.parametrize("as_dict", [False, True])
def test_tuple_or_dict_output_names_select_output(as_dict):
    model = TupleOutput(as_dict)
    batches = make_batches(3)
    with pytest.raises(ZiCoUserError, match="select_output=lambda out: out" + (r"\['logits'\]" if as_dict else r"\[0\]")):
        zico_fast.zico_score(model, batches)
    pick = (lambda out: out["logits"]) if as_dict else (lambda out: out[0])
    result = zico_fast.zico_score(model, batches, select_output=pick)
    assert result.score == pytest.approx(oracle_score(model.net, batches)[0], rel=1e-5)


def test_not_a_batch_at_all():
    with pytest.raises(ZiCoUserError, match="not a pair"):
        zico_fast.zico_score(Net(), [torch.zeros(2, 3, 9, 7)] * 2)


def test_channels_last_inputs_keep_their_layout():
    """The passes run in the caller's layout (the fastest on the CPU), scored as the oracle scores
    the same passes; the score differs from the NCHW one by rounding only."""
    model = Net()
    channels_last = [(x.to(memory_format=torch.channels_last), y) for x, y in make_batches(3)]
    seen = []
    model.stem.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous()))
    result = zico_fast.zico_score(model, channels_last)
    assert seen == [False] * 3  # handed to the model as given
    assert result.score == pytest.approx(oracle_score(model, channels_last)[0], rel=1e-5)
    nchw = [(x.contiguous(), y) for x, y in channels_last]
    assert result.score == pytest.approx(zico_fast.zico_score(model, nchw).score, rel=1e-2)


def test_inside_no_grad_scores_the_same_and_leaves_grad_mode_off():
    model, batches = Net(), make_batches(3)
    expected = zico_fast.zico_score(model, batches).score
    with torch.no_grad():
        assert zico_fast.zico_score(model, batches).score == expected
        assert not torch.is_grad_enabled()


def test_inference_mode_is_an_error_saying_to_call_outside_it():
    model, batches = Net(), make_batches(2)
    with torch.inference_mode(), pytest.raises(ZiCoUserError, match="outside inference_mode"):
        zico_fast.zico_score(model, batches)


def test_unreduced_loss_is_an_error_naming_reduction():
    def per_sample(logits, targets):
        return F.cross_entropy(logits, targets, reduction="none")
    with pytest.raises(ZiCoUserError, match=r"loss_fn must return a scalar tensor, got \(8,\).*reduction"):
        zico_fast.zico_score(Net(), make_batches(2), loss_fn=per_sample)


@pytest.mark.parametrize("bucket_mb", [-1, float("nan"), "25"])
def test_bad_bucket_size_is_an_error(bucket_mb):
    with pytest.raises(ZiCoUserError, match="bucket_mb must be a number"):
        zico_fast.zico_score(Net(), make_batches(2), bucket_mb=bucket_mb)
    with pytest.raises(ZiCoUserError, match="bucket_mb must be a number"):
        zico_fast.ZiCo(Net(), bucket_mb=bucket_mb)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 5, 10))


def with_parametrization(kind):
    from torch.nn.utils import parametrizations, prune
    model = small_net()
    with warnings.catch_warnings():  # the old-style hooks are deprecated
        warnings.simplefilter("ignore")
        {"weight_norm": lambda: parametrizations.weight_norm(model[0]),
         "spectral_norm": lambda: parametrizations.spectral_norm(model[3]),
         "orthogonal": lambda: parametrizations.orthogonal(model[3]),
         "old weight_norm": lambda: nn.utils.weight_norm(model[0]),
         "old spectral_norm": lambda: nn.utils.spectral_norm(model[3]),
         "pruned": lambda: prune.l1_unstructured(model[0], "weight", amount=0.5)}[kind]()
    return model


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "orthogonal", "old weight_norm", "old spectral_norm",
                                  "pruned"])
def test_parametrized_weight_is_an_error_and_the_model_is_untouched(kind):
    # Their .grad is never filled: they used to be dropped as "unused" (or "frozen") from the score,
    # and reading a spectral_norm weight to select it ran a power iteration that changed its buffers.
    model = with_parametrization(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    name = "0" if "weight_norm" in kind or kind == "pruned" else "3"
    for call in (lambda: zico_fast.zico_score(model, make_batches(2)), lambda: zico_fast.ZiCo(model)):
        with pytest.raises(ZiCoUserError, match=rf"layer '{name}' has a computed weight.*prune\.remove"):
            call()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_parametrized_layer_left_out_by_the_caller_is_not_read():
    model = with_parametrization("spectral_norm")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = make_batches(3)
    result = zico_fast.zico_score(model, batches, layers=lambda name, module: name == "0")
    assert list(result.layer_terms) == ["0"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # power iteration undone


@pytest.mark.filterwarnings("ignore:Lazy modules are a new feature")
def test_lazy_layers_must_be_made_first_then_score_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    batches = make_batches(3)
    for call in (lambda: zico_fast.zico_score(model, batches), lambda: zico_fast.ZiCo(model)):
        with pytest.raises(ZiCoUserError, match=r"layer '0' is lazy.*run one forward first"):
            call()
    assert isinstance(model[0].weight, nn.parameter.UninitializedParameter)  # not made behind the user's back
    model(batches[0][0])
    assert zico_fast.zico_score(model, batches).score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)


def test_a_weight_property_computed_from_parameters_is_an_error():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.raw = nn.Parameter(torch.randn(10, 3 * 9 * 7))

        @property
        def weight(self):
            return self.raw * 2

        def forward(self, x):
            return F.linear(x.flatten(1), self.weight)

    with pytest.raises(ZiCoUserError, match="layer '' has a computed weight"):
        zico_fast.zico_score(Scaled(), make_batches(2), layers=(Scaled,))


def test_zico_told_two_batches_scores_two_and_refuses_a_third():
    model, batches = Net(), make_batches(3)

    def record(count):
        with zico_fast.ZiCo(model, num_batches=2) as zico:
            for x, y in batches[:count]:
                model.zero_grad()
                F.cross_entropy(model(x), y).backward()
        return zico

    assert record(2).result().score == pytest.approx(oracle_score(model, batches[:2])[0], rel=1e-5)
    with pytest.raises(ZiCoUserError, match="third gradient.*pass the right num_batches"):
        record(3)
