"""The documentation cannot drift from the code: hooks, settings, commands, examples, links."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import shlex
import tomllib
import typing
from pathlib import Path
from types import ModuleType

import pytest
from pydantic_core import PydanticUndefined

from kefu.core.cli import build_parser
from kefu.core.config import KERNEL_SECTIONS, read_raw
from kefu.core.kernel import load_kernel
from kefu.core.plugins import new_plugin_manager
from kefu.core.web_app import create_app
from kefu.hooks import PROJECT

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOKS_MD = DOCS / "hooks.md"
REGENERATE = ".venv/bin/python docs/gen_hooks.py"
HEADING = re.compile(r"^### `(kefu_\w+)\((.*)\)`$", re.M)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_hooks", DOCS / "gen_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hook_specs() -> dict[str, tuple[str, ...]]:
    """Every hook of the manager the kernel builds, with the argument names pluggy sees."""
    pm = new_plugin_manager()
    callers = (getattr(pm.hook, n) for n in dir(pm.hook) if n.startswith(f"{PROJECT}_"))
    return {c.name: c.spec.argnames for c in callers}


# -- hooks.md -------------------------------------------------------------------


def test_every_hook_has_a_heading_with_its_exact_signature():
    text = read(HOOKS_MD)
    specs = hook_specs()
    assert len(specs) >= 20  # the walk found the specs, not an empty manager
    missing = [
        f"### `{name}({', '.join(args)})`"
        for name, args in specs.items()
        if f"### `{name}({', '.join(args)})`" not in text.splitlines()
    ]
    assert not missing, f"docs/hooks.md lacks {missing}; run `{REGENERATE}`"


def test_no_heading_names_a_hook_that_does_not_exist():
    specs = hook_specs()
    headings = HEADING.findall(read(HOOKS_MD))
    assert headings
    unknown = [name for name, _ in headings if name not in specs]
    assert not unknown, f"docs/hooks.md documents hooks that do not exist: {unknown}"
    assert len(headings) == len({name for name, _ in headings}), "a hook is documented twice"


def test_hooks_md_is_the_generators_output():
    expected = load_generator().render()
    assert read(HOOKS_MD) == expected, (
        f"docs/hooks.md is out of date with the docstrings in hooks/*.py: run `{REGENERATE}`"
    )


def test_every_spec_docstring_states_arguments_return_and_sync_or_async():
    """The docstrings are the reference (CONVENTIONS.md): a new spec must say all of this."""
    pm = new_plugin_manager()
    problems = []
    for name, args in hook_specs().items():
        doc = inspect.getdoc(getattr(pm.hook, name).spec.function) or ""
        problems += [f"{name}: no ':param {a}:'" for a in args if f":param {a}:" not in doc]
        if ":returns:" not in doc:
            problems.append(f"{name}: no ':returns:'")
        if "Sync only" not in doc and "May be async" not in doc:
            problems.append(f"{name}: says neither 'Sync only' nor 'May be async'")
    assert not problems


def type_checking_namespace(module: ModuleType) -> dict:
    """The module's globals plus what its ``if TYPE_CHECKING:`` block imports."""
    namespace = dict(vars(module))
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            code = compile(ast.Module(body=node.body, type_ignores=[]), module.__file__, "exec")
            exec(code, namespace)
    return namespace


def test_every_spec_is_typed_and_its_types_resolve():
    """Typed specs (CONVENTIONS.md, tox 4): every argument and the return, with names that
    exist, so that an editor can show them and a type checker check an implementation."""
    pm = new_plugin_manager()
    problems = []
    for name, args in hook_specs().items():
        spec = getattr(pm.hook, name).spec.function
        annotations = spec.__annotations__
        problems += [f"{name}: '{a}' has no type" for a in args if a not in annotations]
        if "return" not in annotations:
            problems.append(f"{name}: no return type")
        module = importlib.import_module(spec.__module__)
        try:
            typing.get_type_hints(spec, globalns=type_checking_namespace(module))
        except Exception as exc:
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not problems


# -- configuration.md -----------------------------------------------------------


def toml_literal(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).replace("'", '"')


def section_text(text: str, heading: str) -> str:
    """From ``heading`` to the next heading of the same or a higher level, outside code."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text[text.index(heading) :].splitlines()
    fenced = False
    for i, line in enumerate(lines[1:], start=1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            return "\n".join(lines[:i])
    return "\n".join(lines)


def test_configuration_md_documents_every_kernel_key_with_its_default():
    text = read(DOCS / "configuration.md")
    problems = []
    for section, model in KERNEL_SECTIONS.items():
        body = section_text(text, f"### `[{section}]`")
        for key, field in model.model_fields.items():
            default = field.default
            if default is PydanticUndefined:
                default = field.default_factory()
            row = f"| `{key}` | `{toml_literal(default)}` |"
            if default is None:
                row = f"| `{key}` | unset |"
            if row not in body:
                problems.append(f"[{section}] {key}: expected a row starting {row!r}")
    assert not problems, f"docs/configuration.md is out of date with core/config.py: {problems}"


def test_configuration_md_lists_every_builtin_plugin_section():
    kernel = load_kernel(None, environ={}, entry_points=False)
    plugin_sections = sorted(set(kernel.config.sections()) - set(KERNEL_SECTIONS))
    body = section_text(read(DOCS / "configuration.md"), "## Plugin-owned sections")
    missing = [s for s in plugin_sections if f"| `[{s}]` |" not in body]
    assert not missing, (
        f"docs/configuration.md: add a row for each of {missing} to the table under "
        "'Plugin-owned sections' (section, plugin, where its keys are documented)"
    )


def test_configuration_md_env_override_examples_do_what_they_say():
    body = section_text(read(DOCS / "configuration.md"), "## Environment overrides")
    rows = re.findall(r"^\| `(KEFU_[^`]+)` \| `([^`]+)`", body, re.M)
    assert len(rows) >= 4
    for assignment, becomes in rows:
        variable, value = shlex.split(assignment)[0].split("=", 1)
        section = variable.removeprefix("KEFU_").lower().split("__")[0]
        expected = tomllib.loads(becomes)
        assert read_raw(None, {variable: value})[section] == expected, assignment


# -- README and examples in the guides ------------------------------------------


def test_readme_lists_every_cli_command():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    readme = read(ROOT / "README.md")
    missing = [c for c in commands if f"`kefu {c}" not in readme]
    assert not missing, f"README.md 'Command line' lacks {missing}"


def test_every_command_of_the_readme_table_exists():
    """`kefu degrade` is in the table; its plugin ships switched off, the command must not."""
    from kefu.core.cli import _add_plugin_commands

    parser = build_parser()
    _add_plugin_commands(parser)
    commands = next(a for a in parser._actions if a.dest == "command").choices
    table = section_text(read(ROOT / "README.md"), "## Command line")
    named = set(re.findall(r"^\| `kefu ([a-z][\w-]*)", table, re.M)) - {"--traceback", "--version"}
    assert named, "no command found in README.md 'Command line'"
    missing = sorted(named - set(commands))
    assert not missing, f"README.md names commands that `kefu` does not have: {missing}"


def python_block(path: Path, heading: str) -> str:
    """The first ```python block after ``heading``."""
    text = section_text(read(path), heading)
    return re.search(r"```python\n(.*?)```", text, re.S)[1]


async def test_plugins_md_minimal_plugin_serves_its_route(aiohttp_client, tmp_path):
    module = ModuleType("kefu_hello")
    code = python_block(DOCS / "plugins.md", "## A minimal plugin")
    exec(compile(code, "plugins.md", "exec"), module.__dict__)
    (tmp_path / "kefu.toml").write_text("")
    kernel = load_kernel(
        tmp_path / "kefu.toml",
        defaults=(),
        entry_points=False,
        extra_plugins=(("kefu_hello", module),),
    )
    client = await aiohttp_client(create_app(kernel))
    resp = await client.get("/hello")
    assert resp.status == 200
    assert await resp.json() == {"hello": "world"}


async def test_plugins_md_testing_example_passes(aiohttp_client, tmp_path):
    namespace: dict = {}
    code = python_block(DOCS / "plugins.md", "## Testing a plugin")
    exec(compile(code, "plugins.md", "exec"), namespace)
    await namespace["test_audit_plugin"](aiohttp_client, tmp_path)


# -- links ----------------------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, by the generator's (GitHub's) slug rule."""
    gen = load_generator()
    text = re.sub(r"^```.*?^```", "", read(path), flags=re.M | re.S)  # no code comments
    return {gen.anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize(
    "doc",
    ["README.md", "docs/plugins.md", "docs/configuration.md", "docs/hooks.md",
     "examples/kefu-greeter/README.md", "examples/kefu-tagger/README.md"],
)  # fmt: skip
def test_relative_links_resolve(doc):
    path = ROOT / doc
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", read(path)):
        if re.match(r"\w+://", target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(target)
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(target)
    assert not broken, f"{doc}: broken links {broken}"
