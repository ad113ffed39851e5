"""Layout and packaging: one import name over three folders; the wheel works."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from kefu.core.plugins import DEFAULT_PLUGINS

ROOT = Path(__file__).resolve().parent.parent


def _setup_packages() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return {p.strip() for p in parser["options"]["packages"].split() if p.strip()}


def test_core_imports_nothing_from_plugins():
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import kefu.core
        for info in pkgutil.iter_modules(kefu.core.__path__, "kefu.core."):
            importlib.import_module(info.name)
        leaked = sorted(m for m in sys.modules if m.startswith("kefu.plugins"))
        print(",".join(leaked))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "", f"kefu.core imported {out.stdout.strip()}"


def test_every_plugin_folder_is_packaged_and_every_default_exists():
    folders = {
        f"kefu.plugins.{p.name}"
        for p in (ROOT / "plugins").iterdir()
        if p.is_dir() and (p / "__init__.py").exists()
    }
    missing = folders - _setup_packages()
    assert not missing, f"add to setup.cfg [options] packages: {sorted(missing)}"
    assert set(DEFAULT_PLUGINS) <= folders


def test_plugin_folders_do_not_import_each_other():
    offenders = []
    for folder in (ROOT / "plugins").iterdir():
        if not folder.is_dir():
            continue
        for source in folder.rglob("*.py"):
            for line in source.read_text(encoding="utf-8").splitlines():
                words = line.split()
                if words[:1] not in (["import"], ["from"]) or len(words) < 2:
                    continue
                target = words[1]
                if target.startswith("kefu.plugins.") and not target.startswith(
                    f"kefu.plugins.{folder.name}"
                ):
                    offenders.append(f"{source.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders


def test_wheel_contains_all_packages_and_runs(tmp_path):
    """Build the wheel, install it into a folder and run the kernel from it (not the editable)."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheel_dir), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheel_dir.glob("kefu-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    for package in _setup_packages():
        init = target.joinpath(*package.split("."), "__init__.py")
        assert init.exists(), f"{package} missing from the wheel"
    web = target / "kefu" / "plugins" / "web"
    for asset in ROOT.joinpath("plugins", "web").glob("*/**/*.*"):
        if asset.suffix in (".html", ".js", ".css", ".svg"):
            relative = asset.relative_to(ROOT / "plugins" / "web")
            assert (web / relative).exists(), f"web asset {relative} missing from the wheel"
    code = textwrap.dedent(
        f"""
        import io, json, sys, contextlib
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, {str(target)!r})
        import kefu.core.cli
        assert kefu.core.cli.__file__.startswith({str(target)!r}), kefu.core.cli.__file__
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            kefu.core.cli.main(["plugins", "--json"])
        print(out.getvalue())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)["plugins"]}
    for dotted in DEFAULT_PLUGINS:
        record = plugins[dotted.rsplit(".", 1)[-1]]
        assert record["enabled"], record
