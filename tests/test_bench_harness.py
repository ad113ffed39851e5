"""The load harness (tests/bench, issue 7) still works: a minimal run of its driver.

``python -m tests.bench.run --tiny`` starts the baseline relay and ``kefu run`` as real
processes, drives them from two client processes through every scenario at a tiny scale
and writes the report. The driver exits with 1 when kefu lost or duplicated a message,
which the check against the SQLite file would reveal. ``make bench`` is the real run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tiny_run_delivers_everything_and_writes_the_report(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = sorted(tmp_path.glob("*-tiny.json"))
    assert len(reports) == 1 and (tmp_path / "latest.md").exists()
    run = json.loads(reports[0].read_text())
    kefu, relay = run["results"]["kefu"], run["results"]["relay"]
    for results in (kefu, relay):
        assert results["server_alive_at_end"]
        assert results["idle"]["connections"] == 40
        assert results["chat"]["acked"] == results["chat"]["sent"] > 0
        assert results["chat"]["delivery"]["n"] > 0
        assert results["storm"]["resumed"] == results["storm"]["dropped"] == 8
    for name in ("chat", "longpoll"):  # checked against the messages table itself
        loss = kefu[name]["loss"]
        assert loss["stored"] == loss["acked"] > 0
        assert loss["lost"] == loss["duplicated_stored"] == loss["seq_gaps"] == 0
        assert loss["undelivered"] == loss["stored_never_acked"] == 0
    assert kefu["storm"]["loss"]["lost"] == 0
    table = (tmp_path / "latest.md").read_text()
    assert "| chat | delivery p99 (ms) |" in table and "kefu / relay" in table
