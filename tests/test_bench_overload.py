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
    assert plain["ramp"]["steps"]  # P found once, carried over
    # (none met p99 <= 50 ms on a loaded machine: reported at the lowest rate)
    found = plain["ramp"]["best_rate"] or (plain["ramp"].get("none_met") and 20.0)
    assert shedding["rate"] == plain["rate"] == found
    # the plugin's run ramps through P and one rate past it: false alarms, detection
    ramp = shedding["ramp"]
    assert ramp["through"] == plain["rate"]
    assert ramp["steps"][-1]["offered_per_s"] > plain["rate"] or plain["rate"] == 40.0
    assert ramp["changes_below_p"] is not None and "detect_s" in ramp
    assert all("started" in step and "sensors" in step for step in ramp["steps"])
    assert shedding["steady"]["sensors"]["loop_busy"]  # [median, largest]
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
    assert "detect_s" in shedding["flood"] and shedding["flood"]["rate_limited_total"] is not None
    assert "rate_limited_total" in plain["flood"] and plain["flood"]["rate_limited_total"] is None
    table = (tmp_path / "latest.md").read_text()
    assert "| 2P: goodput / the peak |" in table and "with the degradation plugin" in table
