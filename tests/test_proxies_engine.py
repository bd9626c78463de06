"""The proxies inside the run engine: an ensemble-fitness search is deterministic and resumes to
exactly the records and result of an uninterrupted run; the engine's evaluation gives the ZiCo value
of the plain path bit for bit when more proxies are computed beside it."""
import pytest
import torch

from zico_fast.engine import InProcessBackend, evaluate, read_run_log
from zico_fast.engine.seeding import build_seeded
from zico_fast.proxies import ENSEMBLE_MEMBERS
from zico_fast.search import search
from zico_fast.spaces.nb201 import NB201Space
from testing import logged_without_timings

SPACE = NB201Space(C=4, N=1, resolution=16)


@pytest.fixture(scope="module")
def batches():
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 3, 16, 16, generator=gen), torch.randint(0, 10, (16,), generator=gen)) for _ in range(2)]


def run(batches, log, iterations):
    return search(SPACE, batches, iterations=iterations, log_path=log, population=4, generation=3, seed=5,
                  threads=1, backend=InProcessBackend(), fitness="ensemble")


@pytest.mark.slow
def test_ensemble_search_resumes_to_the_uninterrupted_run(batches, tmp_path):
    full = run(batches, tmp_path / "full.jsonl", 9)
    run(batches, tmp_path / "part.jsonl", 3)  # stops after one generation ...
    resumed = run(batches, tmp_path / "part.jsonl", 9)  # ... and goes on from the log
    assert logged_without_timings(tmp_path / "part.jsonl") == logged_without_timings(tmp_path / "full.jsonl")
    assert (resumed.best_arch, resumed.best_score, resumed.population) == (full.best_arch, full.best_score, full.population)
    header = read_run_log(tmp_path / "full.jsonl")[0]
    assert header["settings"]["fitness"] == {"kind": "ensemble", "members": list(ENSEMBLE_MEMBERS)}
    first = logged_without_timings(tmp_path / "full.jsonl")[0]
    assert set(ENSEMBLE_MEMBERS) <= set(first["values"])
    assert full.best_score <= 0.0  # sum of log(rank/m): 0 only for a network first on every member


def test_engine_zico_value_unchanged_by_other_proxies(batches):
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    plain = evaluate(build_seeded(SPACE, arch, 0), batches)
    every = evaluate(build_seeded(SPACE, arch, 0), batches, ("all",), cost=SPACE.cost(arch))
    assert every["zico"] == plain["zico"]
    assert set(every) > {"zico", "naswot", "trainability"}


@pytest.mark.slow
def test_correlate_reports_the_ensemble_and_keeps_the_zico_column(tmp_path):
    from zico_fast.correlate import correlate
    from zico_fast.data import make_batches
    from zico_fast.proxies import ALL

    space = NB201Space()
    data = [make_batches(batch_size=8, num_batches=2, seed=0)]
    kw = dict(sample=10, seed=0, threads=1)
    plain = correlate(space, data, log_path=tmp_path / "plain.jsonl", backend=InProcessBackend(), **kw)
    every = correlate(space, data, log_path=tmp_path / "all.jsonl", backend=InProcessBackend(), proxies=ALL, **kw)
    assert [r["score"] for r in every.records] == [r["score"] for r in plain.records]  # bit for bit
    c = every.report["correlations"]
    assert set(ALL) | {"ensemble"} <= set(c)
    assert c["ensemble"]["members"] == list(ENSEMBLE_MEMBERS) and -1 <= c["ensemble"]["kendall_tau"] <= 1
    assert "ensemble" not in plain.report["correlations"]
    top = every.report["top_of_ranking"]["ensemble"]
    assert 0 <= top["top10_hit"] <= 1 and 0 < top["ndcg10"] <= 1


def test_a_candidate_record_says_why_a_proxy_is_undefined(batches):
    """A cell of 'none' ops makes every block's features constant, so expressivity's entropy is
    undefined: the record holds None for it and, under "reasons", the proxies' own explanation."""
    from zico_fast.engine.evaluate import score_candidate

    dead = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    record = score_candidate(SPACE, dead, batches, seed=0, device="cpu", proxies=("zico", "expressivity", "naswot"))
    assert record["values"]["expressivity"] is None
    assert set(record["reasons"]) >= {"expressivity"} and all(record["reasons"].values())
    live = score_candidate(SPACE, "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                                  "nor_conv_3x3~2|", batches, seed=0, device="cpu", proxies=("zico", "expressivity"))
    assert live["values"]["expressivity"] is not None and "reasons" not in live
