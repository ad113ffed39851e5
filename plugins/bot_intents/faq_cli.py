"""``kefu bot mine-faq [--site SITE] [--since WHEN]``: FAQ clusters of stored conversations.

Reads the conversations from the configured storage (``--config``, else ``$KEFU_CONFIG``,
else ``./kefu.toml``); without ``--site`` every site is mined on its own. Prints a table
per site (progress on stderr), or with ``--json`` the objects ``GET /v1/bot/faq`` answers
(one object with ``--site``, else ``{"sites": [...]}``). Exit status: 0, or 2 on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime


def _when(value: str) -> float:
    """Unix seconds, an ISO date/time (UTC unless it says), or an age such as 30d / 12h."""
    text = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([dhm])", text)
    if match:
        unit = {"d": 86400, "h": 3600, "m": 60}[match[2]]
        return time.time() - float(match[1]) * unit
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected unix seconds, an ISO date or an age such as 30d, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def configure_mine_faq(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", help="the site whose conversations are read (default: every site)")
    p.add_argument(
        "--since",
        type=_when,
        default=None,
        metavar="WHEN",
        help="only questions since: unix seconds, ISO date, or an age (30d, 12h)",
    )
    p.add_argument("--config", "-c", help="path to kefu.toml (default: ./kefu.toml)")
    p.add_argument("--top", type=int, default=20, metavar="N", help="clusters shown (default 20)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.2,
        metavar="SIM",
        help="average cosine similarity at which groups merge (default 0.2)",
    )
    p.add_argument(
        "--window-days",
        type=float,
        default=7.0,
        metavar="DAYS",
        help="trend: the last DAYS against the DAYS before (default 7)",
    )
    p.add_argument(
        "--embeddings",
        metavar="auto|none|FOLDER",
        help="sentence embeddings beside the n-grams (default: the config's [bot] "
        "embedding_model; auto uses the installed MiniLM for mostly-Latin questions)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")  # fmt: skip


def _progress(stream):
    last = [0.0]

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done and total and done < total and now - last[0] < 1.0:
            return
        last[0] = now
        count = f" {done:,}/{total:,}" if total else f" {done:,}"
        stream.write(f"  {stage}...{count}\n")
        stream.flush()

    return report


async def _mine(args: argparse.Namespace) -> list[dict]:
    from kefu.core.cli import _config_path
    from kefu.core.kernel import load_kernel
    from kefu.plugins.bot_intents.faq import MiningOptions, mine_site, no_progress

    kernel = load_kernel(_config_path(args.config))
    storage = kernel.make_storage()
    if storage is None:
        raise RuntimeError("no storage backend is enabled")
    options = MiningOptions(
        threshold=args.threshold,
        top=max(1, args.top),
        window_days=args.window_days,
        embedding_model=args.embeddings or kernel.config.section("bot").embedding_model,
    )
    progress = no_progress if args.json else _progress(sys.stderr)
    await storage.open()
    try:
        if args.site:
            if await storage.get_site(args.site) is None:
                raise RuntimeError(f"no site {args.site!r}")
            sites = [args.site]
        else:
            sites = [s.id for s in await storage.list_sites()]
        reports = []
        for site_id in sites:
            if not args.json:
                sys.stderr.write(f"site {site_id}:\n")
            reports.append(
                await mine_site(storage, site_id, options, since=args.since, progress=progress)
            )
        return reports
    finally:
        await storage.close()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _trend(cluster: dict) -> str:
    if cluster["trend"] is None:
        return "new" if cluster["recent"] else "-"
    return f"{cluster['trend'] * 100:+.0f}%"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_faq(report: dict) -> str:
    """A report as a ranked table with each cluster's questions and answer."""
    since = report.get("since")
    head = (
        f"FAQ clusters of site {report['site_id']}: {report['questions']:,} questions "
        f"({report['unique_questions']:,} distinct) in {report['conversations']:,} conversations"
        + (f" since {datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} UTC" if since else "")
        + f"; {report.get('clusters_found', 0):,} clusters, {report['seconds']:.1f} s"
    )  # fmt: skip
    lines = [head, ""]
    if not report["clusters"]:
        return "\n".join([*lines, "  no clusters (no questions, or none asked twice)"])
    window = report["window_days"]
    lines.append(f"  {'#':>3}  {'size':>6}  {'share':>6}  {'trend':>6}  {'bot fail':>9}  "
                 f"question (closest to the centroid)   [trend: last {window:g} days vs the "
                 f"{window:g} before]")  # fmt: skip
    for rank, c in enumerate(report["clusters"], 1):
        failure = f"{_pct(c['failure_rate'])}/{c['bot_turns']}" if c["bot_turns"] else "-"
        lines.append(
            f"  {rank:>3}  {c['size']:>6,}  {c['share'] * 100:>5.1f}%  {_trend(c):>6}  "
            f"{failure:>9}  {_cut(c['representatives'][0]['text'], 60)}"
        )
        for r in c["representatives"][1:3]:
            lines.append(f"  {'':>37}  · {_cut(r['text'], 58)}")
        answer = c.get("agent_answer")
        if answer:
            lines.append(
                f"  {'':>37}  agents ({answer['count']}/{answer['answered']}): "
                f"{_cut(answer['text'], 50)}"
            )
        lines.append(f"  {'':>37}  intent name suggested: {c['suggested_intent']} (id {c['id']})")
    return "\n".join(lines)


def run_mine_faq(args: argparse.Namespace) -> int:
    try:
        reports = asyncio.run(_mine(args))
    except Exception as exc:  # config, storage: one line, not a traceback
        print(f"kefu bot mine-faq: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(reports[0] if args.site else {"sites": reports}, ensure_ascii=False))
    else:
        print("\n\n".join(format_faq(r) for r in reports) or "no sites")
    return 0
