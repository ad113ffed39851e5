"""docs/protocol.md against the code: every error code the plugins send is in its error
tables, and every default and constant it documents is the one the code has."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import kefu.plugins

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
PLUGINS = Path(kefu.plugins.__file__).parent
#: Calls that send an error code, and the position of the code among their arguments.
CODE_ARGUMENT = {
    "error_frame": 0,  # a gateway error frame
    "GatewayError": 0,
    "BadRequest": 0,  # the auth plugin's 400s
    "ApiError": 1,  # ApiError(status, code, ...): a REST answer or an error frame
    "error_response": 1,  # error_response(status, code, message): an HTTP error
}
#: The settings a client author had to guess before; the table must keep them.
REQUIRED_DEFAULTS = {
    ("gateway", "replay_max"),
    ("gateway", "max_frame_bytes"),
    ("gateway", "rate"),
    ("gateway", "burst"),
    ("auth", "agent_token_ttl"),
    ("auth", "visitor_token_ttl"),
    ("transport_ws", "heartbeat"),
    ("transport_longpoll", "recv_timeout"),
}


def section(text: str, heading: str) -> str:
    """The body of one ``#``-heading, up to the next heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.M)
    assert match, f"docs/protocol.md has no heading {heading!r}"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row (header and separator rows excluded)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or re.match(r"^\|[-| ]+\|$", line):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [row for row in rows if row[0] not in ("code", "status", "setting", "constant")]


def sent_codes(root: Path = PLUGINS) -> dict[str, list[str]]:
    """Every literal code passed to an error-sending call in the plugins, with where."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            index = CODE_ARGUMENT.get(name)
            if index is None or len(node.args) <= index:
                continue
            arg = node.args[index]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                where = f"{path.relative_to(root.parent)}:{node.lineno}"
                found.setdefault(arg.value, []).append(where)
    return found


def documented_codes(text: str) -> set[str]:
    """The codes of the error tables of section 6 (frames and HTTP)."""
    codes = set()
    for row in table_rows(section(text, "6. Error codes")):
        cell = row[1] if row[0].isdigit() else row[0]  # HTTP rows start with the status
        codes |= set(re.findall(r"`(\w+)`", cell))
    return codes


def test_every_error_code_the_plugins_send_is_in_the_error_tables():
    sent = sent_codes()
    assert {"missing_field", "frame_too_large", "invalid_widget_key", "too_large"} <= set(sent)
    documented = documented_codes(PROTOCOL_MD.read_text(encoding="utf-8"))
    missing = {code: where for code, where in sorted(sent.items()) if code not in documented}
    assert not missing, f"error codes sent but not in docs/protocol.md section 6: {missing}"


def test_the_error_tables_hold_no_code_nothing_sends():
    source = "\n".join(p.read_text(encoding="utf-8") for p in PLUGINS.rglob("*.py"))
    documented = documented_codes(PROTOCOL_MD.read_text(encoding="utf-8"))
    stale = sorted(c for c in documented if f'"{c}"' not in source)
    assert not stale, f"docs/protocol.md section 6 documents codes no plugin uses: {stale}"


def test_the_code_scan_sees_a_new_code(tmp_path):
    """The check above can fail: a code the docs lack is reported, whichever call sends it."""
    package = tmp_path / "plugins" / "extra"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "def op():\n"
        '    raise GatewayError("brand_new_code", "x")\n'
        "def rest():\n"
        "    raise ApiError(\n        409,\n        \"another_new_code\",\n        'y',\n    )\n"
        "def http():\n"
        '    return error_response(418, "teapot_code", "z")\n',
        encoding="utf-8",
    )
    found = sent_codes(tmp_path / "plugins")
    assert set(found) == {"brand_new_code", "another_new_code", "teapot_code"}
    documented = documented_codes(PROTOCOL_MD.read_text(encoding="utf-8"))
    assert not set(found) & documented


def config_models() -> dict[str, type]:
    """Each ``[section]`` a plugin declares and its pydantic model (``kefu_config_schema``)."""
    models: dict[str, type] = {}
    for name in (
        "gateway",
        "auth",
        "transport_ws",
        "transport_longpoll",
        "transport_grpc",
        "routing",
        "bot_intents",
        "agent_tools",
        "rest_api",
    ):
        module = importlib.import_module(f"kefu.plugins.{name}")
        models.update(module.kefu_config_schema())
    return models


def documented_defaults(text: str) -> dict[tuple[str, str], str]:
    rows = table_rows(section(text, "Defaults a client sees"))
    found = {}
    for row in rows:
        match = re.fullmatch(r"`\[(\w+)\] (\w+)`", row[0])
        if match:
            found[(match.group(1), match.group(2))] = row[1]
    return found


def parse_value(cell: str):
    cell = cell.strip("`")
    if cell in ("true", "false"):
        return cell == "true"
    return float(cell) if "." in cell else int(cell)


def default_mismatches(text: str) -> dict[str, tuple[str, object]]:
    """``[section] key`` -> (documented cell, the model's default) where they differ."""
    documented = documented_defaults(text)
    assert REQUIRED_DEFAULTS <= set(documented), REQUIRED_DEFAULTS - set(documented)
    models = config_models()
    wrong: dict[str, tuple[str, object]] = {}
    for (name, key), cell in documented.items():
        assert name in models, f"[{name}] is no plugin's config section"
        fields = models[name].model_fields
        assert key in fields, f"[{name}] {key} is not a setting"
        default, value = fields[key].default, parse_value(cell)
        if type(default) is not type(value) or default != value:
            wrong[f"[{name}] {key}"] = (cell, default)
    return wrong


def test_documented_defaults_are_the_settings_models_defaults():
    wrong = default_mismatches(PROTOCOL_MD.read_text(encoding="utf-8"))
    assert not wrong, f"docs/protocol.md defaults (documented, real): {wrong}"


def test_a_wrong_default_is_reported():
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    row = "| `[gateway] replay_max` | 500 |"
    assert row in text
    wrong = default_mismatches(text.replace(row, "| `[gateway] replay_max` | 501 |"))
    assert wrong == {"[gateway] replay_max": ("501", 500)}
    row = "| `[transport_ws] heartbeat` | 30.0 |"
    wrong = default_mismatches(text.replace(row, "| `[transport_ws] heartbeat` | 30 |"))
    assert wrong == {"[transport_ws] heartbeat": ("30", 30.0)}


def test_documented_constants_are_the_codes_constants():
    rows = table_rows(section(PROTOCOL_MD.read_text(encoding="utf-8"), "Defaults a client sees"))
    constants = [row for row in rows if re.fullmatch(r"`kefu(\.\w+)+`", row[0])]
    assert len(constants) >= 5
    for row in constants:
        module, _, name = row[0].strip("`").rpartition(".")
        real = getattr(importlib.import_module(module), name)
        assert real == parse_value(row[1]), f"{row[0]} is {real!r}, documented {row[1]}"


@pytest.mark.parametrize(
    ("cell", "value"), [("500", 500), ("20.0", 20.0), ("true", True), ("`false`", False)]
)
def test_a_default_cell_keeps_its_type(cell, value):
    """20 and 20.0 differ: an int setting documented as a float (or back) is a mismatch."""
    parsed = parse_value(cell)
    assert parsed == value and type(parsed) is type(value)
