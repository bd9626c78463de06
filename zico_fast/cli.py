"""The `zico-fast` command line (also `python -m zico_fast`): score one network, or search a space."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

LOG_NAME = "search.jsonl"


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The data options every subcommand shares (`correlate` reuses them too)."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=None, metavar="SOURCE",
                       help="images to score on: a .npz (x, y), a folder of class sub-folders, or "
                            "torchvision:<Dataset>:<root> (default: the bundled 1,024 real CIFAR-10 images)")
    group.add_argument("--synthetic", action="store_true",
                       help="random normal images and labels instead of real data (changes the ranking)")
    group.add_argument("--batch-size", type=int, default=128, help="images per batch (default 128, as the paper)")
    group.add_argument("--batches", type=int, default=2, help="mini-batches per score (default 2, as the paper)")
    group.add_argument("--data-seed", type=int, default=0, help="which images are drawn (default 0)")
    group.add_argument("--resolution", type=int, default=None,
                       help="resize images to this size (default: 32 for nb201, 224 for mobilenet, as-is for --model)")
    group.add_argument("--num-classes", type=int, default=None,
                       help="classifier outputs (default: 10 for nb201, 1000 for mobilenet)")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                       help="cpu or cuda[:N] (default: cuda if available)")


def batches_from_args(args, num_classes: int | None, resolution: int | None):
    """The fixed batches the options describe, checked against the classifier's size."""
    from zico_fast.data import make_batches

    batches = make_batches(args.data, args.batch_size, args.batches, args.data_seed, args.device,
                           synthetic=args.synthetic, num_classes=num_classes or 10, resolution=resolution)
    top = max(int(y.max()) for _, y in batches)
    if num_classes is not None and top >= num_classes:
        raise ValueError(f"the data has labels up to {top} but the classifier has {num_classes} outputs; "
                         f"pass --num-classes {top + 1} or more")
    return batches


def data_info(args, resolution: int | None) -> dict:
    return {"source": "synthetic" if args.synthetic else str(args.data or "bundled"), "batch_size": args.batch_size,
            "batches": args.batches, "data_seed": args.data_seed, "resolution": resolution}


def _space(args, name: str):
    from zico_fast.spaces import get_space

    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    if name == "mobilenet":
        options.update(resolution=args.resolution or 224, no_reslink=args.no_reslink, bn_eps=args.bn_eps)
    elif args.resolution is not None:
        options["resolution"] = args.resolution
    return get_space(name, **options)


def load_factory(spec: str):
    """The callable named by 'module:factory' or 'path/to/file.py:factory'."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"--model {spec!r}: expected 'module:factory' or 'file.py:factory'")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"--model {spec!r}: no file {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        if str(Path.cwd()) not in sys.path:  # as `python -m` does, so a module beside the user imports
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as error:
            raise ValueError(f"--model {spec!r}: cannot import {target!r} ({error})") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"--model {spec!r}: {target} has no attribute {attr!r}")
        factory = getattr(factory, part)
    return factory


def _score(args) -> int:
    from zico_fast.scorer import zico_score

    cost = None
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.init_seed)  # the score depends on the initial weights: make it repeatable
        if args.model:
            model, network, resolution = load_factory(args.model)(), args.model, args.resolution
            if not isinstance(model, torch.nn.Module):
                raise ValueError(f"--model {args.model!r} returned a {type(model).__name__}, not an nn.Module")
            num_classes = args.num_classes
        else:
            space = _space(args, "mobilenet" if args.structure else "nb201")
            network = (space.arch_from_index(args.index) if args.index is not None
                       else space.canonical(args.structure or args.arch))
            cost, resolution, num_classes = space.cost(network), space.resolution, space.num_classes
            model = space.build(network)
    batches = batches_from_args(args, num_classes, resolution)
    start = time.perf_counter()
    result = zico_score(model.to(args.device), batches)
    seconds = time.perf_counter() - start
    report = {"network": network, "score": result.score, "layer_terms": result.layer_terms,
              "skipped": result.skipped, "num_batches": result.num_batches,
              "params": sum(p.numel() for p in model.parameters()), "flops": cost.flops if cost else None,
              "seconds": seconds, "device": str(args.device), "threads": torch.get_num_threads(),
              "init_seed": args.init_seed, "data": data_info(args, resolution)}
    print(f"{network}\nZiCo score {result.score:.4f}  ({len(result.layer_terms)} layers scored, "
          f"{len(result.skipped)} skipped, {report['params']:,} params, {seconds:.2f} s on {args.device})")
    if args.out == "-":
        print(json.dumps(report, indent=2))
    elif args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _search(args) -> int:
    from zico_fast.search import search, write_search_outputs

    space = _space(args, args.space)
    batches = batches_from_args(args, space.num_classes, space.resolution)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / LOG_NAME
    if log.exists():
        print(f"resuming the search logged in {log}", file=sys.stderr)
    result = search(space, batches, iterations=args.iterations, population=args.population,
                    strategy=args.strategy, seed=args.seed, max_flops=args.max_flops, max_params=args.max_params,
                    max_depth=args.max_depth, log_path=log, device=args.device, workers=args.workers,
                    threads=args.threads, data_info=data_info(args, space.resolution), progress=not args.no_progress)
    write_search_outputs(result, out)
    if result.best_arch is None:
        print(f"no candidate could be scored ({result.failed} failed); see {log}", file=sys.stderr)
        return 1
    cost = result.best_cost
    print(f"best architecture (iteration {result.best_iteration} of {result.iterations}; {result.scored} scored, "
          f"{result.cached} cached, {result.failed} failed, {result.discarded} over budget):\n{result.best_arch}\n"
          f"ZiCo score {result.best_score:.4f}  params {cost.params:,}  FLOPs {cost.flops:,}  depth {cost.depth}\n"
          f"outputs in {out}/: {LOG_NAME}, best.json, candidates.csv, search.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zico-fast", description="ZiCo zero-shot NAS: score networks and search.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{score,search,...}")

    score = sub.add_parser("score", help="ZiCo score of one network")
    which = score.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="NAS-Bench-201 arch string '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'")
    which.add_argument("--index", type=int, help="NAS-Bench-201 / NATS-Bench-TSS index 0..15624")
    which.add_argument("--structure", help="MobileNet-space structure string 'SuperConvK3BNRELU(3,16,2,1)...'")
    which.add_argument("--model", help="'module:factory' or 'file.py:factory', called with no arguments")
    score.add_argument("--init-seed", type=int, default=0, help="torch seed for the initial weights (default 0)")
    score.add_argument("--threads", type=int, help="torch threads (the score depends on it; default: torch's)")
    score.add_argument("--out", help="write the full report (layer terms, skipped layers) as JSON; '-' prints it")
    _add_mobilenet_options(score)
    add_data_options(score)
    score.set_defaults(func=_score)

    run = sub.add_parser("search", help="evolutionary (the paper's) or random search with ZiCo")
    run.add_argument("--space", choices=("nb201", "nb101", "mobilenet"), default="nb201")
    run.add_argument("--strategy", choices=("evolution", "random"), default="evolution")
    run.add_argument("--iterations", type=int, default=1000, help="candidates to evaluate (paper: 100000)")
    run.add_argument("--population", type=int, default=512, help="population size (default 512, as the paper)")
    run.add_argument("--seed", type=int, default=0, help="search seed (candidates and initial weights)")
    run.add_argument("--max-flops", type=float, help="budget on multiply-accumulates per image")
    run.add_argument("--max-params", type=float, help="budget on parameters")
    run.add_argument("--max-depth", type=int, help="budget on depth (mobilenet: total sub_layers, paper: 14)")
    run.add_argument("--out", required=True, metavar="DIR",
                     help=f"output folder ({LOG_NAME}, best.json, candidates.csv, search.png); resumes its log")
    run.add_argument("--workers", type=int,
                     help="scoring processes (default 1, or the resumed log's); on CPU, --workers <cores> "
                          "--threads 1 often beats one process with all threads, most of all on shared cores")
    run.add_argument("--threads", type=int,
                     help="torch threads per scoring process (scores depend on it; default: the resumed log's, "
                          "else torch's default)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_mobilenet_options(run)
    add_data_options(run)
    run.set_defaults(func=_search)

    if importlib.util.find_spec("zico_fast.correlate") is not None:
        from zico_fast import correlate  # imported only when present: it is an optional subcommand

        correlate.add_parser(sub)
    return parser


def _add_mobilenet_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mobilenet space")
    group.add_argument("--no-reslink", action="store_true",
                       help="score without residual links (as ZiCo's ImageNet search does)")
    group.add_argument("--bn-eps", type=float, default=1e-5, help="BatchNorm eps (ZiCo's ImageNet search: 1e-3)")


def main(argv: list[str] | None = None) -> int:
    from zico_fast.scorer import NonFiniteGradientError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NonFiniteGradientError as error:
        print(f"zico-fast: {error}", file=sys.stderr)
        return 1
    except (ValueError, OSError, ImportError) as error:  # bad input: one clear line, no traceback
        print(f"zico-fast: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if getattr(args, "out", None) and args.func is _search:
            print(f"\ninterrupted; run the same command again to resume from {args.out}/{LOG_NAME}", file=sys.stderr)
        return 130
