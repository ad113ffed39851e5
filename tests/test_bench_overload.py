"""The overload bench scenario (issue 16, tests/bench/overload.py) cannot rot: a tiny run.

``python -m tests.bench.run --tiny --scenario overload`` starts ``kefu run`` twice as real
processes, without and with the degradation plugin, and drives both from two client
processes: a ramp to find P, P steady, 2P, the load stopped, a connection flood on top of
the chat, and the check against the SQLite file (nothing acknowledged lost or stored
twice). At this scale nothing is overloaded; the figures are ``make bench-overload``'s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tiny_overload_run_compares_with_and_without_the_plugin(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--tiny", "--scenario", "overload",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads(sorted(tmp_path.glob("*-tiny.json"))[0].read_text())
    results = run["results"]
    assert sorted(results) == ["kefu", "kefu+degradation"]  # asked alone: no relay
    plain, shedding = results["kefu"]["overload"], results["kefu+degradation"]["overload"]
    assert not plain["plugin"] and shedding["plugin"]
    assert plain["ramp"]["steps"] and "ramp" not in shedding  # P found once, carried over
    assert shedding["rate"] == plain["rate"] == plain["ramp"]["best_rate"]
    for result in (plain, shedding):
        assert result["overload"]["offered_per_s"] == 2 * result["rate"]
        for phase in ("steady", "overload"):  # goodput may be 0 on a busy machine at this scale
            assert result[phase]["delivered_per_s"] > 0 and result[phase]["goodput_per_s"] >= 0
        assert result["overload"]["server_fds"] > 0 and result["overload"]["rss_mib"] > 0
        flood = result["flood"]
        assert flood["opened"] + flood["refused"] + flood["failed"] == flood["connections"] == 40
        assert flood["chat"]["delivery"]["n"] > 0
        loss = result["loss"]
        assert loss["stored"] == loss["acked"] > 0
        assert loss["lost"] == loss["duplicated_stored"] == loss["seq_gaps"] == 0
    assert plain["steady"]["level_changes_per_min"] is None  # no plugin, no level
    assert shedding["steady"]["level_changes_per_min"] is not None
    assert shedding["overload"]["level_at_start"] is not None
    table = (tmp_path / "latest.md").read_text()
    assert "| 2P: goodput / the peak |" in table and "with the degradation plugin" in table
