"""The proxies `zico_fast.proxies.compute` knows: what each measures, where it comes from, what it costs.

Every proxy is oriented so that HIGHER means a better predicted network (rank aggregation relies on it).
`source` says which part of the shared scoring pass feeds it:

- "zico": the ZiCo statistics themselves (no extra work).
- "cost": the space's analytic `Cost` (no pass at all; needs `cost=`).
- "grads": post-accumulate-grad hooks on the ZiCo-scored weights, reading the gradients the ZiCo
  backward produces anyway (one elementwise reduction per weight, no extra pass).
- "relu": forward hooks on nn.ReLU modules during the first batch's forward (no extra pass).
- "blocks": forward hooks on the network's blocks during the first batch's forward (no extra pass).
- "vjp": vector-Jacobian products through each block of the first batch's retained graph (the one
  proxy with extra backward work: input gradients only, no weight gradients).
"""
from __future__ import annotations

from dataclasses import dataclass

from zico_fast.errors import ZiCoUserError


@dataclass(frozen=True)
class ProxySpec:
    name: str
    source: str  # see the module docstring
    reference: str
    definition: str


PROXIES: dict[str, ProxySpec] = {spec.name: spec for spec in (
    ProxySpec("zico", "zico", "Li et al., ZiCo, ICLR 2023 (arXiv 2301.11300)",
              "sum over Conv2d/Linear weights l of log(sum_w mean_n|g_n(w)| / std_n(g_n(w))); exactly zico_score"),
    ProxySpec("params", "cost", "Abdelfattah et al., Zero-Cost Proxies, ICLR 2021 (#Params baseline)",
              "trainable parameters, from the space's analytic cost"),
    ProxySpec("flops", "cost", "AZ-NAS 'complexity' (Lee & Ham, CVPR 2024); FLOPs baseline",
              "multiply-accumulates of one image's forward, from the space's analytic cost"),
    ProxySpec("grad_norm", "grads", "Abdelfattah et al., ICLR 2021 (NASLib 'grad_norm')",
              "sum over scored weights of the L2 norm of the first batch's gradient"),
    ProxySpec("snip", "grads", "Lee et al., SNIP, ICLR 2019; as a NAS proxy Abdelfattah et al., ICLR 2021",
              "sum over scored weights of sum_w |w * g(w)| on the first batch"),
    ProxySpec("gsnr", "grads", "gradient signal-to-noise ratio, Liu et al., ICLR 2020 (GSNR)",
              "sum over scored weights l of log(sum_w mean_n(g)^2 / var_n(g)) over elements with var > 0"),
    ProxySpec("zico_bc", "zico", "Bhardwaj et al., ZiCo-BC, ICCV 2023 Workshops (arXiv 2309.14666)",
              "sum over scored layers of [ZiCo layer term - log(H_l * W_l / sqrt(C_l))], H_l x W_l x C_l the "
              "layer's output; our reading of the paper's depth/width correction with beta = 1"),
    ProxySpec("naswot", "relu", "Mellor et al., NASWOT, ICML 2021 (NASLib 'nwot')",
              "log|det K| on the first batch, K_ij = number of ReLU units where samples i and j agree "
              "(both active or both inactive), over every nn.ReLU of the network"),
    ProxySpec("expressivity", "blocks", "Lee & Ham, AZ-NAS, CVPR 2024",
              "sum over block features of the entropy of the normalised eigenvalues of the channel "
              "covariance (positions of all samples as observations; float64)"),
    ProxySpec("progressivity", "blocks", "Lee & Ham, AZ-NAS, CVPR 2024",
              "minimum over consecutive block features of the increase of that entropy (NaN when any "
              "entropy is undefined, as np.min)"),
    ProxySpec("trainability", "vjp", "Lee & Ham, AZ-NAS, CVPR 2024",
              "mean over blocks of 2 - s - 1/s, s the top singular value of E[g_in g_out^T] for a "
              "Rademacher g_out pulled back through the block (NaN with its reason when a block is an identity "
              "map, which AZ-NAS scores -inf)"),
)}

#: What `names="all"` / `--proxies all` computes (the ensemble is computed from these over a population).
ALL = tuple(PROXIES)


def resolve_names(names) -> tuple[str, ...]:
    """('zico', ...) from a tuple/list, a comma-separated string, or "all"; unknown names are errors."""
    if isinstance(names, str):
        names = ALL if names.strip() == "all" else tuple(n.strip() for n in names.split(",") if n.strip())
    names = tuple(names)
    if "all" in names:
        names = ALL
    names = tuple(n for n in names if n != "ensemble")  # a population statistic, not a per-network value
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise ZiCoUserError(f"unknown proxy {', '.join(map(repr, unknown))}; choose from {', '.join(ALL)}, "
                            "'ensemble' or 'all'")
    if not names:
        raise ZiCoUserError(f"no proxy chosen; choose from {', '.join(ALL)} or 'all'")
    return tuple(dict.fromkeys(names))  # drop repeats, keep order


def engine_names(text: str) -> tuple[tuple[str, ...], bool]:
    """(proxies to compute, ensemble wanted) for a command's --proxies value ("zico,naswot",
    "all", "zico,ensemble", ...): ZiCo is always computed and first (the engine's score is ZiCo);
    asking for the ensemble adds its members; "all" means every proxy and the ensemble."""
    from zico_fast.proxies.ensemble import ENSEMBLE_MEMBERS

    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    wants_ensemble = "ensemble" in parts or "all" in parts
    names = resolve_names([p for p in parts if p != "ensemble"] or ["zico"])
    if wants_ensemble:
        names = tuple(dict.fromkeys((*names, *ENSEMBLE_MEMBERS)))
    return tuple(dict.fromkeys(("zico", *names))), wants_ensemble
