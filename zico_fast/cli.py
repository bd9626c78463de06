"""The `zico-fast` command line (also `python -m zico_fast`): flags, their checks and the error
policy. A ZiCoUserError (bad input) is one line and exit status 2; anything else is a bug and shows
its traceback. The subcommands themselves are in zico_fast.commands."""
from __future__ import annotations

import argparse
import shlex
import sys
import warnings

import torch

import zico_fast
from zico_fast.clean_stop import stop_cleanly
from zico_fast.errors import ZiCoUserError
from zico_fast.spaces import SPACES
from zico_fast.user_code import blame_user_code


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


positive = _int_at_least(1)


def _positive_float(text: str) -> float:
    """A budget such as 600e6: a number above 0 (a budget of 0 or less admits no network)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _add_data_options(p: argparse.ArgumentParser, workers: bool = True) -> None:
    """The options every command shares, with the same defaults everywhere."""
    g = p.add_argument_group("data and reproducibility (shared by score, search and correlate)")
    g.add_argument("--dataset", choices=("cifar10", "cifar100"), default=None,
                   help="picks together the bundled images (1,024 of CIFAR-10, 2,000 of CIFAR-100), the classifier's "
                        "outputs (10 or 100), the normalisation and correlate's accuracy column (cifar10_test_acc or "
                        "cifar100_test_acc); None: cifar10, with the space's own outputs (mobilenet: 1000)")
    g.add_argument("--data", default=None, metavar="SOURCE",
                   help="other images, replacing only the bundled ones (--dataset still sets the outputs, the "
                        "normalisation and the accuracy column): a .npz with x and y (uint8 pixels are divided by 255, "
                        "float pixels are taken as given in [0, 1]), a folder of class sub-folders, "
                        "torchvision:<Dataset>:<root>, or 'bundled'; None means bundled")
    g.add_argument("--synthetic", action="store_true",
                   help="random normal images and labels instead of real data (changes the ranking)")
    g.add_argument("--batch-size", type=positive, default=128, help="images per batch (the paper: 128)")
    g.add_argument("--batches", type=_int_at_least(2), default=2,
                   help="mini-batches per score (the paper: 2; ZiCo needs at least 2)")
    g.add_argument("--data-seed", type=int, default=0, help="which images are drawn")
    g.add_argument("--resolution", type=positive, default=None,
                   help="image size (None: the space's, 32 for nb201/nb101, 224 for mobilenet; as-is for --model)")
    g.add_argument("--num-classes", type=positive, default=None,
                   help="classifier outputs (None: --dataset's, else the space's); with the bundled images or "
                        "--dataset it must equal the data set's class count")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    g.add_argument("--seed", type=int, default=0,
                   help="initial weights come from (seed, architecture): the same network scores the same in "
                        "every command")
    g.add_argument("--proxies", default="zico", metavar="NAMES",
                   help="comma-separated proxies computed in the same passes as ZiCo (zico, params, flops, "
                        "grad_norm, snip, gsnr, zico_bc, naswot, expressivity, progressivity, trainability), "
                        "'ensemble' (adds its members) or 'all'; see zico_fast/proxies/README.md")
    g.add_argument("--threads", type=positive, default=1,
                   help="torch intra-op threads per scoring process (scores differ by float rounding between "
                        "thread counts, so it is recorded and a resume must keep it)")
    g.add_argument("--layout", choices=("auto", "channels_last", "contiguous"), default="auto",
                   help="memory layout of the images in the passes; auto: the one measured fastest for the space "
                        "and device (channels_last for nb201, nb101 and mobilenet on the CPU; contiguous otherwise). "
                        "Scores differ by float rounding between layouts, so it is recorded and a resume must keep it")
    if workers:
        g.add_argument("--workers", type=positive, default=1,
                       help="scoring processes (results never depend on it); a candidate that crashes one fails alone")
        g.add_argument("--no-progress", action="store_true", help="no progress bar")
        r = p.add_argument_group("where candidates are scored")
        r.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local: --workers processes on this machine; ray: --workers actors on a Ray cluster "
                            "(pip install 'zico_fast[ray]'); the log is the same either way")
        r.add_argument("--ray-address", default=None, metavar="ADDRESS",
                       help="a running Ray cluster ('auto', host:port or ray://host:10001); default: start a local one")
        r.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="FRACTION",
                       help="GPU share of each Ray actor when --device cuda (0.25: four candidates share a GPU)")


_SPACE_HELP = (f"{', '.join(SPACES)}, or your own SearchSpace subclass as 'module:Class' or 'file.py:Class' "
               "(see the README)")


def _space_name(text: str) -> str:
    if text in SPACES or ":" in text:  # a user's own space is checked when it is loaded
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is neither a space ({', '.join(SPACES)}) nor 'module:Class' "
                                     "or 'file.py:Class' naming your own SearchSpace")


def _add_space_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mobilenet space (refused for the others)")
    g.add_argument("--no-reslink", action="store_true", help="score without residual links (ZiCo's ImageNet search)")
    g.add_argument("--bn-eps", type=_positive_float, help="BatchNorm eps (None: the space's 1e-5; ZiCo's ImageNet search: 1e-3)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="zico-fast", formatter_class=fmt,
                     description="ZiCo zero-shot NAS: score networks, search spaces, check rankings against benchmarks.")
    parser.add_argument("--version", action="version", version=f"zico-fast {zico_fast.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="{score,search,correlate,salvage}")

    score = sub.add_parser("score", help="ZiCo score of one network", formatter_class=fmt,
                           description="ZiCo score of one network.")
    which = score.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="an architecture string of --space (nb201: '|op~0|+|op~0|op~1|+|...|', "
                                        "sss: '8:16:32:40:64')")
    which.add_argument("--index", type=int, help="benchmark index (nb201: 0..15624, sss: 0..32767)")
    which.add_argument("--structure", help="MobileNet-space structure string 'SuperConvK3BNRELU(3,16,2,1)...'")
    which.add_argument("--model", help="'module:factory' or 'file.py:factory', called with no arguments")
    score.add_argument("--space", type=_space_name, default=None, metavar="SPACE",
                       help=f"space of --arch/--index (None: nb201; mobilenet for --structure); {_SPACE_HELP}")
    pick = score.add_mutually_exclusive_group()
    pick.add_argument("--output-index", type=int, default=None,
                      help="--model returns a tuple/list: the logits are this item")
    pick.add_argument("--output-key", default=None, help="--model returns a dict: the logits are this key")
    score.add_argument("--out", default=None,
                       help="write the full report as JSON to this file (folders are created); '-' prints only "
                            "the JSON on stdout, the human summary then goes to stderr")
    _add_space_options(score)
    _add_data_options(score, workers=False)
    score.set_defaults(command_name="score")

    run = sub.add_parser("search", help="evolutionary (the paper's) or random search with ZiCo", formatter_class=fmt,
                         description="Evolutionary (the paper's) or random search; resumes from its log in --out.")
    run.add_argument("--space", type=_space_name, default="nb201", metavar="SPACE", help=_SPACE_HELP)
    run.add_argument("--strategy", choices=("evolution", "random", "all"), default="evolution",
                     help="all: every architecture of an indexed space (nb201, sss) in index order, "
                          "--iterations of them")
    run.add_argument("--iterations", type=positive, default=1000, help="candidates to evaluate (the paper: 100000)")
    run.add_argument("--population", type=positive, default=512, help="population size (the paper: 512)")
    run.add_argument("--fitness", choices=("zico", "ensemble"), default="zico",
                     help="what the search maximises: ZiCo, or the proxies' rank ensemble against every "
                          "candidate logged so far (computes the ensemble's members)")
    run.add_argument("--generation", type=positive, default=16,
                     help="children proposed from one state of the population; results depend on it, not on --workers")
    run.add_argument("--max-flops", type=_positive_float, help="budget on multiply-accumulates per image")
    run.add_argument("--max-params", type=_positive_float, help="budget on parameters")
    run.add_argument("--max-depth", type=positive, help="budget on depth (mobilenet: total sub_layers, the paper: 14)")
    run.add_argument("--out", required=True, metavar="DIR",
                     help="output folder: search.jsonl (the log; a rerun resumes it), best.json, candidates.csv, "
                          "search.png")
    _add_space_options(run)
    _add_data_options(run)
    run.set_defaults(command_name="search")

    cor = sub.add_parser("correlate", formatter_class=fmt,
                         help="rank correlation of ZiCo (and #Params, FLOPs, other proxies) with benchmark accuracy",
                         description="Scores a benchmark's architectures and reports Kendall tau and Spearman rho "
                                     "against its ground truth.")
    cor.add_argument("--space", type=_space_name, default="nb201", metavar="SPACE", help=_SPACE_HELP)
    cor.add_argument("--truth", default=None, metavar="CSV|TABLE",
                     help="a CSV with arch_index, arch_string and the truth column, or a bundled table: nb201-dev "
                          "(725 rows), nb101-dev (300 NASLib-sampled cells), nb101-uniform (1,000 cells drawn "
                          "uniformly), nb301-dev (425 NAS-Bench-301 rows, --space darts); None: the space's -dev table")
    cor.add_argument("--truth-column", default=None,
                     help="ground-truth column (None: <dataset>_test_acc; for nb101 and darts cifar10_val_acc, "
                          "the only accuracy their tables have); a column of the other CIFAR data set is refused")
    cor.add_argument("--compare", default=None, metavar="COLS",
                     help="comma-separated columns of other proxies' scores (None: every naslib_* column)")
    cor.add_argument("--sample", type=positive, default=None, metavar="K", help="score K random rows (None: all)")
    cor.add_argument("--repeats", type=positive, default=1, metavar="R",
                     help="stability: score with R batch draws (data seeds data-seed .. data-seed+R-1)")
    cor.add_argument("--out", required=True, metavar="DIR",
                     help="output folder: scores.jsonl (the log; a rerun resumes it), report.json, summary.md, "
                          "scatter.png")
    cor.add_argument("--report-only", action="store_true",
                     help="score nothing: report on the rows the run in --out (same arguments) has logged so far")
    _add_space_options(cor)
    _add_data_options(cor)
    cor.set_defaults(command_name="correlate")

    fix = sub.add_parser("salvage", formatter_class=fmt, help="repair a damaged run log, keeping every valid record",
                         description="Keeps every valid record of a damaged search or correlate log, moves the "
                                     "damaged file aside (LOG.damaged-<time>) and writes the repaired log in its "
                                     "place; then the same run command resumes, scoring only what was lost.")
    fix.add_argument("log", metavar="LOG|DIR", help="the run log, or the --out folder of the run")
    fix.set_defaults(command_name="salvage")
    return parser


def _is_out_of_memory(error: BaseException) -> bool:
    """An allocation the machine cannot serve: CUDA's OutOfMemoryError, the CPU allocator's
    RuntimeError ("can't allocate memory"), or Python's MemoryError."""
    return (isinstance(error, (MemoryError, torch.OutOfMemoryError))
            or "can't allocate memory" in str(error))


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"zico-fast: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from zico_fast import commands
    from zico_fast.scorer import NonFiniteGradientError

    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        # stop_cleanly: Ctrl-C and SIGTERM end the workers and close the log whole, then the resume line below;
        # blame_user_code: an exception raised in the user's --space/--model code is one line naming their file
        with stop_cleanly(), blame_user_code():
            return getattr(commands, args.command_name)(args)
    except NonFiniteGradientError as error:
        print(f"zico-fast: {error}", file=sys.stderr)
        return 1
    except ZiCoUserError as error:
        print(f"zico-fast {args.command_name}: error: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
        if not _is_out_of_memory(error):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"zico-fast {args.command_name}: error: out of memory ({reason}); score a smaller network, "
              "use a smaller --batch-size, or a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        how = getattr(stop, "signal_name", "SIGINT")
        if args.command_name in ("search", "correlate") and not getattr(args, "report_only", False):
            again = shlex.join(["zico-fast", *(sys.argv[1:] if argv is None else argv)])
            print(f"\nzico-fast {args.command_name}: stopped by {how}, the log in {args.out} is whole; to resume "
                  f"run the same command: {again}", file=sys.stderr)
        else:
            print(f"\nzico-fast {args.command_name}: stopped by {how}", file=sys.stderr)
        return getattr(stop, "exit_status", 130)
