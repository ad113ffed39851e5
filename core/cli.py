"""The ``kefu`` command line: run, init, check, plugins, plus plugin commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from importlib import resources
from pathlib import Path

from kefu.core import __version__
from kefu.core.errors import KefuError

log = logging.getLogger("kefu")

DEFAULT_CONFIG_NAME = "kefu.toml"


def _config_path(arg: str | None) -> str | None:
    """``--config``, else ``$KEFU_CONFIG``, else ``./kefu.toml`` if present, else defaults."""
    if arg:
        return arg
    if os.environ.get("KEFU_CONFIG"):
        return os.environ["KEFU_CONFIG"]
    return DEFAULT_CONFIG_NAME if Path(DEFAULT_CONFIG_NAME).exists() else None


def _load(args: argparse.Namespace):
    from kefu.core.kernel import load_kernel

    return load_kernel(_config_path(args.config))


def cmd_run(args: argparse.Namespace) -> int:
    from kefu.core.kernel import load_kernel
    from kefu.core.server import serve

    environ = dict(os.environ)
    if args.workers is not None:  # as KEFU_SERVER__WORKERS would, and the workers get it
        environ["KEFU_SERVER__WORKERS"] = str(args.workers)
    kernel = load_kernel(_config_path(args.config), environ=environ)
    if "KEFU_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(kernel.config.server.log_level.upper())
    return serve(kernel, host=args.host, port=args.port, environ=environ)


def _workers(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 64:
        raise argparse.ArgumentTypeError("must be 1 to 64")
    return number


def _secret_in_use(path: Path) -> tuple[str, str] | None:
    """The secret an install already signs visitor tokens with, and where it is: the config
    being overwritten, else the one ``kefu run`` generated into the data dir."""
    if path.exists():
        import tomllib

        try:
            found = tomllib.loads(path.read_text(encoding="utf-8")).get("server", {})
        except (OSError, tomllib.TOMLDecodeError):
            found = {}
        if isinstance(found.get("secret"), str) and found["secret"]:
            return found["secret"], str(path)
    data_dir = Path(os.environ.get("KEFU_SERVER__DATA_DIR", "kefu-data"))
    generated = data_dir / "secret"
    if generated.is_file():
        text = generated.read_text(encoding="utf-8").strip()
        if text:
            return text, str(generated)
    return None


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"kefu: {path} already exists (use --force to overwrite)", file=sys.stderr)
        return 1
    template = resources.files("kefu.core").joinpath("config_template.toml").read_text()
    kept = None if args.new_secret else _secret_in_use(path)
    text = template.replace("@SECRET@", kept[0] if kept else secrets.token_urlsafe(48))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    if kept:  # a new one would orphan every visitor's identity (their tokens stop verifying)
        print(
            f"wrote {path} keeping the install's secret from {kept[1]} (visitors keep their "
            f"conversations; --new-secret replaces it); start with: kefu run --config {path}"
        )
    else:
        print(f"wrote {path} with a new per-install secret; start with: kefu run --config {path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from kefu.core.supervisor import check_scaling
    from kefu.core.web_app import create_app

    kernel = _load(args)
    check_scaling(kernel.config)
    kernel.make_storage()
    kernel.make_bus()
    create_app(kernel)  # collects every plugin's routes, middlewares and checks
    enabled = [r.name for r in kernel.plugins.records if r.enabled]
    print(
        f"{kernel.config.source}: OK; storage={kernel.config.storage.backend}, "
        f"bus={kernel.config.bus.backend}; {len(enabled)} plugins enabled: {', '.join(enabled)}"
    )
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    kernel = _load(args)
    records = [r.as_dict() for r in kernel.plugins.records]
    if args.json:
        print(json.dumps({"plugins": records}, indent=2))
        return 0
    rows = [("NAME", "VERSION", "ORIGIN", "STATE", "HOOKS")]
    for r in records:
        state = "enabled" if r["enabled"] else ("failed" if r["error"] else "disabled")
        hooks = ", ".join(h.removeprefix("kefu_") for h in r["hooks"]) or r["error"] or "-"
        rows.append((r["name"], r["version"], r["origin"], state, hooks))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = zip(row[:4], widths, strict=True)
        print("  ".join(cell.ljust(w) for cell, w in cells) + "  " + row[4])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kefu", description="Self-hosted live chat.")
    parser.add_argument("--version", action="version", version=f"kefu {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback on errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", help="path to kefu.toml (default: ./kefu.toml)")
        return p

    run = with_config(sub.add_parser("run", help="start the server"))
    run.add_argument("--host", help="listen address (overrides [server] host)")
    run.add_argument("--port", type=int, help="listen port (overrides [server] port)")
    run.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="worker processes on the one port (overrides [server] workers)",
    )
    run.set_defaults(func=cmd_run)
    init = sub.add_parser("init", help="write a commented kefu.toml with a new secret")
    init.add_argument("path", nargs="?", default=DEFAULT_CONFIG_NAME)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument(
        "--new-secret",
        action="store_true",
        help="write a new secret even where the install has one (signs out every visitor)",
    )
    init.set_defaults(func=cmd_init)
    check = with_config(sub.add_parser("check", help="validate the config and every plugin's"))
    check.set_defaults(func=cmd_check)
    plugins = with_config(sub.add_parser("plugins", help="list plugins and their hooks"))
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=cmd_plugins)
    return parser


def _add_plugin_commands(parser: argparse.ArgumentParser) -> None:
    """Plugin sub-commands come from the built-ins (the opt-in ones too) and entry points."""
    from kefu.core.facade import HookFacade
    from kefu.core.hookcall import HookFailures
    from kefu.core.plugins import OPT_IN_PLUGINS, make_plugin_manager

    try:
        plugin_set = make_plugin_manager(enable=OPT_IN_PLUGINS)
    except KefuError as exc:
        log.debug("plugin commands unavailable: %s", exc)
        return
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    try:
        commands = HookFacade(plugin_set.pm, None, HookFailures()).cli_commands()
    except KefuError as exc:
        log.warning("plugin commands unavailable: %s", exc)
        return
    for command in commands:
        if command.name in sub.choices:
            log.warning("plugin command %r ignored: the name is already taken", command.name)
            continue
        p = sub.add_parser(command.name, help=command.help)
        command.configure(p)
        p.set_defaults(func=command.run)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _add_plugin_commands(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("KEFU_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KefuError as exc:
        if args.traceback:
            raise
        print(f"kefu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
