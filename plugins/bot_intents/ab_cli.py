"""``kefu bot ab-report EXPERIMENT --site SITE``: an A/B experiment's report from storage.

Reads the conversations of the site from the configured storage (``--config``, else
``$KEFU_CONFIG``, else ``./kefu.toml``) and prints the per-variant table, or with
``--json`` the same object ``GET /v1/bot/experiments/{id}/report`` answers.
Exit status: 0 with a report, 1 when nobody of the site was exposed, 2 on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


def configure_ab_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="the experiment id (a flow's experiments: key)")
    p.add_argument("--site", required=True, help="the site whose conversations are read")
    p.add_argument("--config", "-c", help="path to kefu.toml (default: ./kefu.toml)")
    p.add_argument(
        "--since", type=float, default=None, metavar="UNIX_SECONDS",
        help="only exposures at or after this time",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")


async def _report(args: argparse.Namespace) -> dict | None:
    from kefu.core.cli import _config_path
    from kefu.core.kernel import load_kernel
    from kefu.plugins.bot_intents.abtests import experiment_report

    kernel = load_kernel(_config_path(args.config))
    storage = kernel.make_storage()
    if storage is None:
        raise RuntimeError("no storage backend is enabled")
    await storage.open()
    try:
        return await experiment_report(storage, args.site, args.experiment, args.since)
    finally:
        await storage.close()


def run_ab_report(args: argparse.Namespace) -> int:
    from kefu.plugins.bot_intents.experiments import format_report

    try:
        report = asyncio.run(_report(args))
    except Exception as exc:  # config, storage: one line, not a traceback
        print(f"kefu bot ab-report: {exc}", file=sys.stderr)
        return 2
    if report is None:
        print(f"no exposures of {args.experiment!r} in site {args.site!r}", file=sys.stderr)
        return 1
    print(json.dumps(report) if args.json else format_report(report))
    return 0
