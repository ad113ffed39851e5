"""Intent-recognition benchmark: ``python tests/bench/bot_eval_bench.py [--datasets DIR]``.

Runs the real command, ``kefu bot eval --dataset ... --json``, on CLINC150
(``clinc150/data_full.json``) and BANKING77 (``banking77/``), after checking the files
against the folder's ``SHA256SUMS``, and prints the figures beside issue 6's targets.
The datasets are read in place from ``../shared/datasets`` (or ``$KEFU_DATASETS`` or
``--datasets``); nothing is copied into the repository. Not part of ``make test``:
the two runs take a few minutes on two cores. Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASETS = ROOT.parent / "shared" / "datasets"
KEFU = Path(sys.executable).parent / "kefu"

#: (dataset, JSON key, comparison, bound, label)
TARGETS = [
    ("clinc150", "accuracy", ">=", 0.935, "CLINC150 in-scope test accuracy"),
    ("clinc150", "oos_recall", ">=", 0.50, "CLINC150 OOS recall at the val-tuned threshold"),
    ("clinc150", "inscope_accuracy_at_threshold", ">=", 0.92, "... in-scope accuracy there"),
    ("banking77", "accuracy", ">=", 0.92, "BANKING77 test accuracy"),
    ("clinc150", "p99_ms", "<=", 10.0, "CLINC150 p99 per classification (ms)"),
    ("banking77", "p99_ms", "<=", 10.0, "BANKING77 p99 per classification (ms)"),
    ("clinc150", "train_seconds", "<=", 60.0, "training on 15,100 utterances (s)"),
]

DATASETS = {"clinc150": "clinc150/data_full.json", "banking77": "banking77"}


def verify_checksums(root: Path) -> None:
    """Refuse to run on files that differ from ``SHA256SUMS``."""
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        sys.exit(f"bot_eval_bench: {sums} not found; pass --datasets DIR")
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        path = root / name.strip().lstrip("*")
        actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if actual != digest:
            sys.exit(f"bot_eval_bench: {path}: sha256 {actual}, expected {digest}")


def run_eval(path: Path) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [str(KEFU), "bot", "eval", "--dataset", str(path), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"bot_eval_bench: kefu bot eval failed on {path}:\n{result.stderr}")
    report = json.loads(result.stdout)
    report["command_seconds"] = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        type=Path,
        default=Path(os.environ.get("KEFU_DATASETS", DEFAULT_DATASETS)),
        help="folder holding clinc150/, banking77/ and SHA256SUMS",
    )
    parser.add_argument("--only", choices=sorted(DATASETS), help="run one dataset")
    args = parser.parse_args(argv)
    verify_checksums(args.datasets)
    reports: dict[str, dict] = {}
    for name, relative in DATASETS.items():
        if args.only and name != args.only:
            continue
        path = args.datasets / relative
        print(f"$ kefu bot eval --dataset {path} --json", flush=True)
        reports[name] = run_eval(path)
        r = reports[name]
        print(
            f"  accuracy {r['accuracy']:.4f} (95% CI {r['accuracy_ci95'][0]:.4f}-"
            f"{r['accuracy_ci95'][1]:.4f})  macro-F1 {r['macro_f1']:.4f}  "
            f"threshold {r['threshold']:.3f}  coverage {r['coverage']:.4f}  "
            f"in-scope@t {r['inscope_accuracy_at_threshold']:.4f}  oos_recall {r['oos_recall']}\n"
            f"  p50/p99 {r['p50_ms']:.2f}/{r['p99_ms']:.2f} ms (CPU {r['p50_cpu_ms']:.2f}/"
            f"{r['p99_cpu_ms']:.2f})  train {r['train_seconds']:.1f} s "
            f"(CPU {r['train_cpu_seconds']:.1f})  sha256 {r['dataset_sha256']}",
            flush=True,
        )
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    missed = 0
    for dataset, key, op, bound, label in TARGETS:
        if dataset not in reports or reports[dataset].get(key) is None:
            continue
        value = reports[dataset][key]
        ok = value >= bound if op == ">=" else value <= bound
        missed += not ok
        print(f"  {'PASS' if ok else 'MISS'}  {label}: {value:.4f} (target {op} {bound})")
    print(json.dumps(reports, indent=2), file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
