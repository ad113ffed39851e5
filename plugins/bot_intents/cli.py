"""``kefu bot ...``: the ``bot`` command and its sub-commands (``eval`` for now).

Add a sub-command by appending to :data:`SUBCOMMANDS` (``bot validate`` goes here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from kefu.core.types import CliCommand

log = logging.getLogger(__name__)


def _threshold_arg(value: str) -> float | None:
    if value == "auto":
        return None
    try:
        threshold = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {value!r}") from None
    if not 0.0 <= threshold <= 1.0:
        raise argparse.ArgumentTypeError(f"a threshold is a confidence in 0..1, got {value}")
    return threshold


def _fraction_arg(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction such as 0.01, got {value!r}"
        ) from None
    if not 0.0 <= fraction <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction is in 0..1 (0.01 = one point), got {value}")
    return fraction


def _configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        required=True,
        metavar="PATH",
        help="CLINC-style .json file, or a folder with train.csv/test.csv (text,category)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--threshold",
        type=_threshold_arg,
        default=None,
        metavar="auto|FLOAT",
        help="confidence below which input is out-of-scope (default auto: tuned on val)",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=_fraction_arg,
        default=0.01,
        metavar="FRACTION",
        help="auto threshold: in-scope accuracy it may cost on val (default 0.01 = 1 point)",
    )
    p.add_argument(
        "--no-oos-class",
        action="store_true",
        help="do not train oos_train as an out-of-scope class (threshold only)",
    )
    p.add_argument(
        "--latency-samples",
        type=int,
        default=0,
        metavar="N",
        help="time N single classifications (default: every test utterance)",
    )
    p.add_argument(
        "--embeddings",
        default="auto",
        metavar="auto|none|FOLDER",
        help="sentence-embedding features: the installed all-MiniLM-L6-v2 (auto, used for "
        "mostly-Latin-script data), none (n-grams only), or a BERT model folder",
    )
    p.add_argument(
        "--embedding-layers",
        type=int,
        default=3,
        metavar="N",
        help="transformer blocks of the embedding model to run (default 3; 0: all)",
    )


def run_eval(args: argparse.Namespace) -> int:
    """Load the dataset, evaluate, print the report; errors become one line (exit 2)."""
    from kefu.plugins.bot_intents.classifier import TrainingOptions
    from kefu.plugins.bot_intents.datasets import load_dataset
    from kefu.plugins.bot_intents.embeddings import resolve_model_dir
    from kefu.plugins.bot_intents.evaluate import EvalOptions, evaluate, no_progress

    progress = no_progress if args.json else Progress(sys.stderr)
    # The command draws its own progress; the package's INFO lines would interleave.
    logging.getLogger("kefu.plugins.bot_intents").setLevel(logging.WARNING)
    dataset = load_dataset(args.dataset)
    resolve_model_dir(args.embeddings)  # a bad folder fails here, before any work
    options = EvalOptions(
        threshold=args.threshold,
        max_accuracy_drop=args.max_accuracy_drop,
        oos_class=not args.no_oos_class,
        latency_samples=max(0, args.latency_samples),
        training=TrainingOptions(
            embedding_model=args.embeddings, embedding_layers=max(0, args.embedding_layers)
        ),  # oos_label: the default, "oos", as EvalOptions
    )
    report = evaluate(dataset, options, progress)
    report["dataset_path"] = str(args.dataset)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


def _configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="flow files (YAML) to check")
    p.add_argument(
        "--config",
        "-c",
        metavar="KEFU_TOML",
        help="also check the campaign and segment names of when: against this config's [bot] "
        "and the actions against the ones its plugins install (as the server does)",
    )


def _known_names(config: str | None) -> tuple[dict[str, set[str]] | None, Any]:
    """Campaign and segment names of a config's ``[bot]`` section and the action names the
    server would have with it (None, None without a config)."""
    if not config:
        return None, None
    from kefu.core.kernel import load_kernel
    from kefu.plugins.bot_intents.demo import actions_of
    from kefu.plugins.bot_intents.strategy import Strategy

    kernel = load_kernel(config)
    names = Strategy.from_settings(kernel.config.section("bot")).names()
    return names, set(actions_of(kernel))


def run_validate(args: argparse.Namespace) -> int:
    """Check flow files; problems as ``file:line: message`` on stderr, exit 1 if any."""
    from pathlib import Path

    from kefu.plugins.bot_intents.flow_yaml import MAX_FLOW_BYTES
    from kefu.plugins.bot_intents.validate import check_flow, format_problems

    known, actions = _known_names(args.config)  # a bad config: one line, exit 2 (`kefu check`)
    failed = 0
    for name in args.files:
        path = Path(name)
        try:
            if path.stat().st_size > MAX_FLOW_BYTES:  # refused before it is read
                size = path.stat().st_size
                print(f"{name}:1: the file is {size:,} bytes; a flow may have at most "
                      f"{MAX_FLOW_BYTES:,}", file=sys.stderr)  # fmt: skip
                failed += 1
                continue
            data = path.read_bytes()
        except OSError as exc:
            print(f"{name}:0: cannot read: {exc.strerror or exc}", file=sys.stderr)
            failed += 1
            continue
        checked, problems = check_flow(data, actions, known=known)
        if problems:
            print(format_problems(name, problems), file=sys.stderr)
            failed += 1
        else:
            spec = checked.spec
            print(f"{name}: ok: flow {spec.id!r}, {len(spec.states)} states, "
                  f"{len(spec.intents)} intents")  # fmt: skip
    return 1 if failed else 0


def _faq_cli() -> Any:
    from kefu.plugins.bot_intents import faq_cli

    return faq_cli


def _ab_cli() -> Any:
    from kefu.plugins.bot_intents import ab_cli

    return ab_cli


#: (name, help, configure, run) of every ``kefu bot`` sub-command.
SUBCOMMANDS: list[tuple[str, str, Callable[[Any], None], Callable[[Any], int]]] = [
    ("eval", "train and evaluate intent recognition on a dataset", _configure_eval, run_eval),
    ("validate", "check dialogue flow files (errors as file:line)", _configure_validate,
     run_validate),
    ("ab-report", "report of an A/B experiment (rates, intervals, sample-ratio check)",
     lambda p: _ab_cli().configure_ab_report(p), lambda a: _ab_cli().run_ab_report(a)),
    ("mine-faq", "cluster the visitors' questions of stored conversations (FAQ mining)",
     lambda p: _faq_cli().configure_mine_faq(p), lambda a: _faq_cli().run_mine_faq(a)),
]  # fmt: skip


def configure_bot(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bot_command", metavar="SUBCOMMAND")
    for name, help_text, configure, run in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(bot_run=run)
    parser.set_defaults(bot_help=parser.print_help)


def run_bot(args: argparse.Namespace) -> int:
    run = getattr(args, "bot_run", None)
    if run is None:
        args.bot_help()
        return 2
    return run(args)


def bot_command() -> CliCommand:
    return CliCommand(
        name="bot",
        help="bot tools: evaluate intent recognition, validate flows",
        configure=configure_bot,
        run=run_bot,
    )


# ---------------------------------------------------------------------------
# Human output
# ---------------------------------------------------------------------------


class Progress:
    """Step-by-step progress on stderr: a live timer/counter on a terminal, lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()

    @contextlib.contextmanager
    def __call__(self, message: str, total: int = 0) -> Iterator[Callable[[int], None]]:
        done = [0]
        started = time.perf_counter()
        stop = threading.Event()

        def line(final: str = "") -> str:
            count = f" {done[0]:,}/{total:,}" if total else ""
            return f"  {message}...{count} {time.perf_counter() - started:.1f}s{final}"

        def tick() -> None:
            while not stop.wait(0.2):
                self.stream.write("\r" + line())
                self.stream.flush()

        ticker = threading.Thread(target=tick, daemon=True) if self.live else None
        if ticker:
            ticker.start()
        else:
            self.stream.write(f"  {message}...\n")
            self.stream.flush()
        try:
            yield lambda n=1: done.__setitem__(0, done[0] + n)
        finally:
            stop.set()
            if ticker:
                ticker.join()
                self.stream.write("\r" + line(" done") + "\n")
            else:
                elapsed = time.perf_counter() - started
                self.stream.write(f"  {message}: done in {elapsed:.1f}s\n")
            self.stream.flush()


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def format_report(r: dict) -> str:
    """The report as an aligned table with a short header."""
    lo, hi = r["accuracy_ci95"]
    oos = r["oos_recall"]
    oos_note = "no out-of-scope test examples"
    if oos is not None:
        olo, ohi = r["oos_recall_ci95"]
        oos_note = f"95% CI {olo * 100:.2f}-{ohi * 100:.2f}, n={r['oos_test_examples']:,}"
    trained = r["train_examples"] + (r["oos_train_examples"] if r["oos_training"] == "class" else 0)
    n, n_latency = r["test_examples"], r["latency_samples"]
    rows = [
        ("in-scope accuracy", _pct(r["accuracy"]),
         f"95% Wilson CI {lo * 100:.2f}-{hi * 100:.2f}, n={n:,}"),
        ("macro-F1", f"{r['macro_f1']:.4f}", f"over {r['intents']} intents"),
        ("threshold", f"{r['threshold']:.3f}", r["threshold_source"]),
        ("coverage at threshold", _pct(r["coverage"]), "in-scope test utterances answered"),
        ("accuracy at threshold", _pct(r["accuracy_at_threshold"]), "of those answered"),
        ("in-scope accuracy at threshold", _pct(r["inscope_accuracy_at_threshold"]),
         "correct and answered, of all in-scope"),
        ("out-of-scope recall", _pct(oos), oos_note),
        ("latency p50 / p99", f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms",
         f"wall clock, one at a time on one core, n={n_latency:,}"),
        ("  CPU time p50 / p99", f"{r['p50_cpu_ms']:.2f} / {r['p99_cpu_ms']:.2f} ms",
         "the same calls without waiting for a busy core"),
        ("training time", f"{r['train_seconds']:.1f} s",
         f"{trained:,} utterances; {r['train_cpu_seconds']:.1f} s CPU"),
    ]  # fmt: skip
    header = [
        f"kefu bot eval: {r['dataset']} ({r['dataset_format']})",
        f"  sha256 {r['dataset_sha256']}",
        f"  {r['intents']} intents; train {r['train_examples']:,}"
        f" + {r['oos_train_examples']:,} out-of-scope ({r['oos_training']});"
        f" val {r['val_examples']:,} + {r['oos_val_examples']:,};"
        f" test {r['test_examples']:,} + {r['oos_test_examples']:,}",
        f"  model: {r['model']}",
        "",
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    table = [
        f"  {'metric'.ljust(widths[0])}  {'value'.rjust(widths[1])}  notes",
        f"  {'-' * widths[0]}  {'-' * widths[1]}  {'-' * 5}",
    ]
    table += [f"  {a.ljust(widths[0])}  {b.rjust(widths[1])}  {c}" for a, b, c in rows]
    return "\n".join(header + table)
