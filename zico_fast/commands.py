"""The three subcommands: from parsed options to library calls, the output folder and the terminal.
The library returns results; zico_fast.reporting writes the files."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import math
import sys
import time
from pathlib import Path

import torch

from zico_fast.engine import (build_seeded, check_device, evaluate, init_seed, make_backend, record as repro_record,
                              torch_settings)
from zico_fast.errors import ZiCoUserError
from zico_fast.engine.evaluate import zero_spread_summary
from zico_fast.engine.repro import machine
from zico_fast.engine.run_lock import RunLock
from zico_fast.out_folder import (CORRELATE_LOG, SEARCH_LOG, run_folder, salvage, writable_folder, write_atomically,
                                  write_outputs)
from zico_fast.proxies.registry import engine_names


def _check_common(args) -> torch.device:
    if args.synthetic and args.data is not None:
        raise ZiCoUserError("--synthetic and --data exclude each other: synthetic images replace the data")
    _dataset_classes(args)
    return check_device(args.device, on_this_machine=getattr(args, "backend", "local") == "local")


def _dataset_classes(args) -> int | None:
    """The outputs --dataset gives the network (None: the space's own), refusing a --num-classes that
    disagrees with the data set named, or with the bundled images' (--data alone leaves it free)."""
    from zico_fast.data import DATASETS, DEFAULT_DATASET

    dataset = DATASETS[args.dataset or DEFAULT_DATASET]
    fixed = args.dataset is not None or (args.data in (None, "bundled") and not args.synthetic)
    if fixed and args.num_classes is not None and args.num_classes != dataset.num_classes:
        if args.dataset:
            raise ZiCoUserError(f"--dataset {dataset.name} has {dataset.num_classes} classes, but --num-classes is "
                                f"{args.num_classes}; leave --num-classes out (the data set sets it)")
        raise ZiCoUserError(f"the bundled images (--dataset {dataset.name}) have {dataset.num_classes} classes, but "
                            f"--num-classes is {args.num_classes}; leave --num-classes out, pass --dataset cifar100 "
                            "for CIFAR-100, or give your own images with --data")
    return dataset.num_classes if args.dataset else None


def _backend(args):
    """None (the library's local pool, sized to the work) or the backend the flags ask for."""
    if args.backend == "local" and args.ray_address is None and not args.gpus_per_worker:
        return None
    return make_backend(args.workers, kind=args.backend, ray_address=args.ray_address,
                        gpus_per_worker=args.gpus_per_worker)


def _space(args, name: str):
    from zico_fast.spaces import get_space

    num_classes = args.num_classes or _dataset_classes(args)
    options = {} if num_classes is None else {"num_classes": num_classes}
    if name == "mobilenet":
        options.update(resolution=args.resolution or 224, no_reslink=args.no_reslink)
        if args.bn_eps is not None:  # else the space's own default
            options["bn_eps"] = args.bn_eps
    elif args.no_reslink or args.bn_eps is not None:  # would be ignored: say so rather than score without them
        raise ZiCoUserError(f"--no-reslink and --bn-eps shape the mobilenet space only, not {name}; leave them out")
    elif args.resolution is not None:
        options["resolution"] = args.resolution
    if ":" in name:  # the user's own: 'module:Class' or 'file.py:Class'
        from zico_fast.user_code import load_space

        return load_space(name, options)
    try:
        return get_space(name, **options)
    except ValueError as error:  # the space's own check of --resolution / --num-classes
        raise ZiCoUserError(f"{name} space: {error}") from None


def _canonical(space, text: str) -> str:
    try:
        return space.canonical(text)
    except ValueError as error:
        raise ZiCoUserError(str(error)) from None


def _batches(args, num_classes, resolution, data_seed=None, space_name=None):
    """The run's batches, in the layout --layout picks for the space (None: a --model) and device."""
    from zico_fast.data import make_batches
    from zico_fast.layout import choose_layout, with_layout

    try:
        batches = make_batches(args.data, args.batch_size, args.batches, args.data_seed if data_seed is None else data_seed,
                               "cpu", synthetic=args.synthetic, num_classes=num_classes or 10, resolution=resolution,
                               dataset=args.dataset or "cifar10")
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
        raise ZiCoUserError(str(error)) from None
    top = max(int(y.max()) for _, y in batches)
    if num_classes is not None and top >= num_classes:
        raise ZiCoUserError(f"the data has labels up to {top} but the classifier has {num_classes} outputs; "
                            f"pass --num-classes {top + 1} or more")
    return with_layout(batches, choose_layout(args.layout, space_name, args.device))


def data_info(args, resolution) -> dict:
    source = "synthetic" if args.synthetic else str(args.data or "bundled")
    return {"source": source, "dataset": args.dataset or "cifar10", "batch_size": args.batch_size,
            "batches": args.batches, "data_seed": args.data_seed, "resolution": resolution}


def load_factory(spec: str):
    """The zero-argument callable named by 'module:factory' or 'path/to/file.py:factory'."""
    from zico_fast.user_code import load_attribute

    factory, attr = load_attribute(spec, "--model", "factory"), spec.rpartition(":")[2]
    if not callable(factory):
        raise ZiCoUserError(f"--model {spec!r}: {attr} is a {type(factory).__name__}, not a callable")
    try:
        inspect.signature(factory).bind()
    except TypeError:
        raise ZiCoUserError(f"--model {spec!r}: {attr}{inspect.signature(factory)} needs arguments; give a "
                            "factory that builds the model with no arguments (wrap it in a small function)") from None
    except ValueError:  # builtins without a signature: call it and see
        pass
    return factory


def _select_output(args):
    if args.output_index is not None:
        return lambda out: out[args.output_index]
    if args.output_key is not None:
        return lambda out: out[args.output_key]
    return None


def score(args) -> int:
    device = _check_common(args)
    out = None if args.out in (None, "-") else Path(args.out)
    if out is not None:  # fail (or make the folder) before the work, not after
        if out.is_dir():
            raise ZiCoUserError(f"--out {out} is a folder; give a file name such as {out / 'score.json'}")
        writable_folder(out.parent).mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if out is None else RunLock(out):  # one writer per --out file
        return _score(args, device, out)


def _score(args, device, out: Path | None) -> int:
    cost = None
    if args.model:
        if args.space or args.no_reslink or args.bn_eps is not None:
            raise ZiCoUserError("--space, --no-reslink and --bn-eps describe a space's networks, and --model "
                                "builds its own; leave them out")
        factory, network = load_factory(args.model), args.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed(args.seed, f"model:{args.model}"))
            try:
                model = factory()
            except Exception as error:  # the user's code; one line here, their traceback when they run it
                raise ZiCoUserError(f"--model {args.model!r}: the factory raised {type(error).__name__}: {error}") from None
        if not isinstance(model, torch.nn.Module):
            raise ZiCoUserError(f"--model {args.model!r} returned a {type(model).__name__}, not an nn.Module")
        resolution, num_classes, seed_key = args.resolution, args.num_classes, f"model:{args.model}"
    else:
        space = _space(args, args.space or ("mobilenet" if args.structure else "nb201"))
        if args.index is not None:
            if not space.has_index:
                raise ZiCoUserError(f"the {space.name} space has no index; give --arch")
            try:
                network = space.arch_from_index(args.index)
            except ValueError as error:
                raise ZiCoUserError(str(error)) from None
        else:
            network = _canonical(space, args.structure or args.arch)
        cost, resolution, num_classes = space.cost(network), space.resolution, space.num_classes
        model, seed_key = build_seeded(space, network, args.seed, device), space.key(network)
    batches = _batches(args, num_classes, resolution, space_name=None if args.model else space.name)
    details = {}
    proxies, _ = engine_names(args.proxies)
    if cost is None and {"params", "flops"} & set(proxies):
        raise ZiCoUserError("params/flops come from a space's analytic cost; with --model leave them out of --proxies")
    with torch_settings(args.threads):
        start = time.perf_counter()
        try:
            values = evaluate(model.to(device), [(x.to(device), y.to(device)) for x, y in batches], proxies,
                              cost=cost, select_output=_select_output(args), details=details)
        except (RuntimeError, IndexError, KeyError, TypeError) as error:
            if not args.model:
                raise  # a space's own network failing is our bug: keep the traceback
            # Usually the user's model does not fit the images or labels it was given.
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ZiCoUserError(
                f"--model {args.model!r} failed on inputs of shape {tuple(batches[0][0].shape)}: "
                f"{type(error).__name__}: {first_line}; check --resolution, --num-classes and "
                f"--output-index/--output-key against the model") from None
        seconds = time.perf_counter() - start
    report = {"network": network, "score": values["zico"], **details,
              **({"proxies": values} if len(proxies) > 1 else {}),
              "params": sum(p.numel() for p in model.parameters()), "flops": cost.flops if cost else None,
              "seconds": seconds, "seed": args.seed, "init_seed": init_seed(args.seed, seed_key),
              "data": data_info(args, resolution), "repro": repro_record(device, args.threads, batches),
              "machine": machine(device)}
    human = sys.stderr if args.out == "-" else sys.stdout
    print(f"{network}\nZiCo score {values['zico']:.4f}  ({len(details['layer_terms'])} layers scored, "
          f"{len(details['skipped'])} skipped, {report['params']:,} params, {seconds:.2f} s on {device})", file=human)
    if len(proxies) > 1:
        print("  ".join(f"{k} {v:.4g}" for k, v in values.items() if k != "zico"), file=human)
    from zico_fast.reporting import json_safe

    text = json.dumps(json_safe(report), indent=2)  # strict JSON: a non-finite value is null
    if args.out == "-":
        print(text)
    elif out is not None:
        write_atomically(out, text + "\n")
    if not math.isfinite(values["zico"]):  # scripts must not take this for a score
        print("zico-fast score: the ZiCo score is not finite: a gradient was inf or NaN; check the data and the "
              "model's initialisation (zico_score(..., nonfinite='raise') names the layer and batch)", file=sys.stderr)
        return 1
    return 0


def _summarise_warnings(command: str, records, log: Path) -> None:
    """The run's one line about networks that scored 0 (their records hold the warning, not the terminal)."""
    line = zero_spread_summary(records)
    if line:
        print(f"zico-fast {command}: {line} in {log}", file=sys.stderr)


def search(args) -> int:
    from zico_fast.reporting import SEARCH_OUTPUTS, write_search_outputs
    from zico_fast.search import search as run_search

    device = _check_common(args)
    space = _space(args, args.space)
    batches = _batches(args, space.num_classes, space.resolution, space_name=space.name)
    out = run_folder(Path(args.out), SEARCH_LOG, SEARCH_OUTPUTS)
    log = out / SEARCH_LOG
    with RunLock(log):  # one run per folder, until its outputs are written; refused at once otherwise
        if log.exists():
            print(f"resuming the search logged in {log}", file=sys.stderr)
        result = run_search(space, batches, iterations=args.iterations, population=args.population,
                            strategy=args.strategy, seed=args.seed, generation=args.generation,
                            max_flops=args.max_flops, max_params=args.max_params, max_depth=args.max_depth,
                            log_path=log, device=device, workers=args.workers, threads=args.threads, backend=_backend(args),
                            proxies=engine_names(args.proxies)[0], fitness=args.fitness, progress=not args.no_progress)
        names = write_outputs(write_search_outputs, result, out, data_info(args, space.resolution), log)
    _summarise_warnings("search", result.records, log)
    if result.best_arch is None:
        print(f"no candidate could be scored ({result.failed} failed); see {log}", file=sys.stderr)
        return 1
    cost = result.best_cost
    print(f"best architecture (iteration {result.best_iteration} of {result.iterations}; {result.scored} scored, "
          f"{result.cached} cached, {result.failed} failed, {result.discarded} over budget):\n{result.best_arch}\n"
          f"{'ensemble fitness' if args.fitness == 'ensemble' else 'ZiCo score'} {result.best_score:.4f}  params {cost.params:,}  FLOPs {cost.flops:,}  depth {cost.depth}\n"
          f"outputs in {out}/: {SEARCH_LOG}, {', '.join(names)}")
    return 0


def correlate(args) -> int:
    from zico_fast.correlate import correlate as run_correlate
    from zico_fast.reporting import CORRELATE_OUTPUTS, write_correlate_outputs
    if importlib.util.find_spec("scipy") is None:  # before any work
        raise ZiCoUserError("correlate needs scipy: pip install 'zico_fast[validate]'")
    device = _check_common(args)
    space = _space(args, args.space)
    compare = None if args.compare is None else [c.strip() for c in args.compare.split(",") if c.strip()]
    batch_sets = [_batches(args, space.num_classes, space.resolution, args.data_seed + r, space.name)
                  for r in range(args.repeats)]
    out = run_folder(Path(args.out), CORRELATE_LOG, CORRELATE_OUTPUTS)
    with contextlib.nullcontext() if args.report_only else RunLock(out / CORRELATE_LOG):  # report-only only reads
        result = run_correlate(space, batch_sets, log_path=out / CORRELATE_LOG, truth=args.truth,
                               truth_column=args.truth_column, compare=compare, sample=args.sample, seed=args.seed,
                               device=device, threads=args.threads, workers=args.workers, backend=_backend(args),
                               proxies=engine_names(args.proxies)[0], progress=not args.no_progress,
                               report_only=args.report_only, dataset=args.dataset or "cifar10")
        data = {**data_info(args, space.resolution), "data_seeds": [args.data_seed + r for r in range(args.repeats)]}
        names = write_outputs(write_correlate_outputs, result, out, data, out / CORRELATE_LOG)
    c = result.report["correlations"]

    def two(name):
        return f"{c[name]['kendall_tau']:.3f} / {c[name]['spearman']:.3f}"

    print(f"N={result.report['n']}  Kendall tau / Spearman vs {result.report['truth_column']}:  ZiCo {two('zico')}   "
          f"#Params {two('params')}   FLOPs {two('flops')}")
    _summarise_warnings("correlate", result.records, out / CORRELATE_LOG)
    if result.report["failed"]:
        print(f"{len(result.report['failed'])} score(s) failed and are left out (see report.json)", file=sys.stderr)
    print(f"outputs in {out}/: {CORRELATE_LOG}, {', '.join(names)}")
    return 0
