"""The ``kefu`` command line, run as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEFU = [sys.executable, "-m", "kefu.core.cli"]


def kefu(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [*KEFU, *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=60
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_run(config: Path, port: int, cwd: Path) -> subprocess.Popen:
    """``kefu run`` as a process, its output (stderr too) on ``stdout``."""
    return subprocess.Popen(
        [*KEFU, "run", "--config", str(config), "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def wait_for_healthz(proc: subprocess.Popen, url: str, context=None, within: float = 30):
    """The first ``/healthz`` answer of a ``kefu run`` that is starting (an open response)."""
    deadline = time.monotonic() + within
    while True:
        try:
            r = urllib.request.urlopen(url, timeout=1, context=context)
        except OSError:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, f"server did not answer {url}"
            time.sleep(0.1)
            continue
        assert json.loads(r.read())["status"] == "ok"
        return r


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "kefu.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def test_run_serves_healthz_and_prints_url(tmp_path, config):
    port = free_port()
    proc = start_run(config, port, tmp_path)
    try:
        with wait_for_healthz(proc, f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert f"serving on http://127.0.0.1:{port}/" in output
    # first start: the demo admin's password is printed once, with the console's sign-in
    # page on the real port (a browser page, not the API address that answers 405 to GET)
    assert f"admin sign-in at http://127.0.0.1:{port}/console/login:" in output
    assert proc.returncode == 0, output


def test_run_refuses_several_workers_on_the_in_process_bus(tmp_path, config):
    config.write_text(config.read_text() + "workers = 2\n")
    result = kefu("run", "--config", str(config), "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2
    assert "server.workers: 2 workers need a bus shared between processes" in result.stderr
    assert '[bus] backend = "redis"' in result.stderr
    # the same from the command line and from the environment, and from `kefu check`
    run = kefu("run", "--config", str(config), "--workers", "3", cwd=tmp_path)
    assert run.returncode == 2 and "3 workers need a bus" in run.stderr
    env = {"KEFU_SERVER__WORKERS": "4"}
    check = kefu("check", "--config", str(config), cwd=tmp_path, env=env)
    assert check.returncode == 2 and "4 workers need a bus" in check.stderr


@pytest.mark.parametrize("value", ["0", "65", "x"])
def test_run_workers_flag_is_checked(tmp_path, config, value):
    result = kefu("run", "--config", str(config), "--workers", value, cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --workers" in result.stderr


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[server]\nprot = 1\n", "server.prot: unknown key"),
        ('[server]\nport = "x"\n', "server.port: Input should be a valid integer"),
        ('[server]\nsecret = { env = "KEFU_TEST_UNSET" }\n', "server.secret: environment"),
        ("[server\n", "invalid TOML"),
        ('[server]\nlog_level = "loud"\n', "server.log_level: Input should be"),
    ],
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_config_is_one_line_without_traceback(tmp_path, text, where, command):
    path = tmp_path / "kefu.toml"
    path.write_text(text)
    result = kefu(command, "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kefu: error: {path}: {where}")
    assert "Traceback" not in result.stderr


def test_traceback_flag_shows_the_traceback(tmp_path):
    path = tmp_path / "kefu.toml"
    path.write_text("[server]\nprot = 1\n")
    result = kefu("--traceback", "check", "--config", str(path), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_init_writes_private_commented_config_that_checks(tmp_path):
    result = kefu("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "kefu.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.startswith("# kefu configuration") and "@SECRET@" not in text
    data_dir = tmp_path / "data"
    env = {"KEFU_SERVER__DATA_DIR": str(data_dir)}
    check = kefu("check", cwd=tmp_path, env=env)
    assert check.returncode == 0, check.stderr
    assert "OK" in check.stdout
    again = kefu("init", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert path.read_text() == text


def test_init_over_an_install_keeps_its_secret(tmp_path):
    """`kefu run` without a config generated kefu-data/secret; `kefu init` afterwards (and
    `init --force` over a config) keeps it, or every visitor's token stops verifying."""
    (tmp_path / "kefu-data").mkdir()
    (tmp_path / "kefu-data" / "secret").write_text("s" * 64)
    result = kefu("init", cwd=tmp_path)
    assert result.returncode == 0 and "keeping the install's secret" in result.stdout
    assert f'secret = "{"s" * 64}"' in (tmp_path / "kefu.toml").read_text()
    (tmp_path / "kefu-data" / "secret").unlink()
    forced = kefu("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and "kefu.toml" in forced.stdout
    assert f'secret = "{"s" * 64}"' in (tmp_path / "kefu.toml").read_text()
    fresh = kefu("init", "--force", "--new-secret", cwd=tmp_path)
    assert fresh.returncode == 0 and "new per-install secret" in fresh.stdout
    assert "s" * 64 not in (tmp_path / "kefu.toml").read_text()


def test_two_inits_get_different_secrets(tmp_path):
    kefu("init", "a.toml", cwd=tmp_path)
    kefu("init", "b.toml", cwd=tmp_path)
    secret = [line for line in (tmp_path / "a.toml").read_text().splitlines() if "secret =" in line]
    assert secret and secret[0] not in (tmp_path / "b.toml").read_text()


def test_plugins_lists_builtins_and_example_and_honours_disable(tmp_path, config):
    listed = kefu("plugins", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "greeter" in rows and "entrypoint" in rows["greeter"] and "enabled" in rows["greeter"]
    assert "bus_memory" in rows and "builtin" in rows["bus_memory"]

    config.write_text(config.read_text() + '[plugins]\ndisable = ["greeter"]\n')
    data = json.loads(kefu("plugins", "--json", "--config", str(config), cwd=tmp_path).stdout)
    greeter = next(p for p in data["plugins"] if p["name"] == "greeter")
    assert greeter["enabled"] is False and greeter["hooks"] == []


def test_missing_required_plugin_stops_startup_naming_it(tmp_path, config):
    config.write_text(config.read_text() + '[plugins]\nrequire = ["kefu-sso"]\n')
    result = kefu("run", "--config", str(config), "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2
    assert "required plugin 'kefu-sso' is not installed" in result.stderr


def test_misspelled_hook_stops_startup_naming_plugin_and_hook(tmp_path, config):
    config.write_text(
        config.read_text() + '[plugins]\nenable = ["tests.plugins.misspelled_hook"]\n'
    )
    result = kefu("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "plugin 'tests.plugins.misspelled_hook': unknown hook 'kefu_evnt'" in result.stderr


def test_plugin_command_with_a_taken_name_is_ignored_not_a_crash(monkeypatch, capsys):
    from kefu.core import cli
    from kefu.core.types import CliCommand

    clash = CliCommand("plugins", "shadows a kernel command", lambda p: None, lambda a: 99)
    monkeypatch.setattr(
        "kefu.core.facade.HookFacade.cli_commands", lambda self: [clash, clash], raising=True
    )
    parser = cli.build_parser()
    cli._add_plugin_commands(parser)  # must not raise argparse's "conflicting subparser"
    assert cli.main(["plugins", "--json"]) == 0
    assert '"plugins"' in capsys.readouterr().out
