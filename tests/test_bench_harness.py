"""The load harness (tests/bench, issue 7) still works: a minimal run of its driver.

``python -m tests.bench.run --tiny`` starts the baseline relay and ``kefu run`` as real
processes, drives them from two client processes through every scenario at a tiny scale
and writes the report. The driver exits with 1 when kefu lost or duplicated a message,
which the check against the SQLite file would reveal. ``make bench`` is the real run.
The ``kill`` scenario runs on a kefu server of its own: SIGKILL under load, a restart on
the same files and port, every client resumed, every conversation assigned and its agent
told (the driver exits with 1 otherwise).

The multi-worker variant runs kefu as ``kefu run --workers 2`` over the local Redis bus
(127.0.0.1:6379, a key prefix of its own): the harness's cross-worker path (CPU and RSS
summed over the workers, per-worker placement of client sockets) stays tested.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_tiny_run_delivers_everything_and_writes_the_report(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,  # two kefu servers (the kill scenario's its own), started three times
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
    kill = kefu["kill"]  # kefu only: the relay keeps nothing to come back to
    assert "kill" not in relay
    assert kill["population"] == "16 / 4" and kill["setup_unassigned"] == 0
    assert kill["clients_resumed"] == kill["clients_back_at_once"] == 18  # 2 agents kept away
    assert kill["resume_max_s"] is not None and kill["away_agents_resumed"] == 2
    assert kill["late_visitors"] == 4 and kill["conversations"] == 20
    assert kill["queued_left"] == kill["assigned_untold"] == kill["agents_untold"] == 0
    assert kill["loss"]["stored"] == kill["loss"]["acked"] >= kill["acked"] > 0
    assert kill["loss"]["lost"] == kill["loss"]["duplicated_stored"] == 0
    assert kill["loss"]["undelivered"] == kill["loss"]["seq_gaps"] == 0
    table = (tmp_path / "latest.md").read_text()
    assert "| chat | delivery p99 (ms) |" in table and "kefu / relay" in table
    assert "| kill | all resumed, after the restart (listening) (s) |" in table


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="needs the local Redis on 127.0.0.1:6379")
def test_tiny_run_on_two_server_workers_places_both_sides(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bench.run",
            "--tiny",
            "--server-workers",
            "2",
            "--targets",
            "kefu",
            "--scenario",
            "idle",
            "--scenario",
            "chat",
            "--param",
            "chat.visitors=24",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads(next(tmp_path.glob("*-tiny.json")).read_text())
    kefu = run["results"]["kefu"]
    assert kefu["server_alive_at_end"] and kefu["server_workers"] == 2
    idle = kefu["idle"]
    assert idle["connections"] == 40
    spread = idle["connections_by_worker"]
    assert sorted(spread) == ["0", "1"] and sum(spread.values()) >= 40  # + probe, driver
    chat = kefu["chat"]
    assert chat["acked"] == chat["sent"] > 0
    placed = chat["cross_worker"]
    assert placed["unknown"] == 0 and placed["cross"] + placed["same"] == 24
    assert (
        chat["cross_worker"]["delivery_cross"]["n"] + placed["delivery_same"]["n"]
        == (chat["delivery"]["n"])
    )
    loss = chat["loss"]
    assert loss["stored"] == loss["acked"] > 0
    assert loss["lost"] == loss["duplicated_stored"] == loss["seq_gaps"] == 0
    assert (
        "| chat | delivery p99, sides on two workers (ms) |" in (tmp_path / "latest.md").read_text()
    )


def test_tiny_grpc_run_compares_the_two_transports(tmp_path):
    """``--scenario grpc``: a WebSocket and a gRPC population at the same rate, no loss."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--tiny", "--targets", "kefu",
         "--scenario", "grpc", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads(sorted(tmp_path.glob("*-tiny.json"))[0].read_text())
    kefu = run["results"]["kefu"]
    for name in ("grpc_ws", "grpc"):
        assert kefu[name]["offered_per_s"] == 10.0 and kefu[name]["delivery"]["n"] > 0
        loss = kefu[name]["loss"]
        assert loss["stored"] == loss["acked"] > 0
        assert loss["lost"] == loss["duplicated_stored"] == loss["undelivered"] == 0
    assert "| grpc | gRPC: delivery p99 (ms) |" in (tmp_path / "latest.md").read_text()
