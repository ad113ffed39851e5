"""kefu.toml: validation, environment overrides, secrets, error messages."""

from __future__ import annotations

import pytest

from kefu.core.config import read_raw
from kefu.core.errors import ConfigError
from kefu.core.kernel import load_kernel


def test_no_file_gives_embedded_defaults():
    kernel = load_kernel(None, environ={})
    assert kernel.config.source == "<built-in defaults>"
    assert kernel.config.server.port == 8080
    assert kernel.config.bus.backend == "memory"


def test_values_are_read_and_plugin_sections_validated(write_config):
    path = write_config('[server]\nport = 9001\n[greeter]\ngreeting = "hi"\n')
    kernel = load_kernel(path, environ={})
    assert kernel.config.server.port == 9001
    assert kernel.config.section("greeter").greeting == "hi"


@pytest.mark.parametrize(
    ("text", "key", "expect"),
    [
        ("[server]\nprot = 1\n", "server.prot", "unknown key (known keys: host, port"),
        ('[server]\nport = "abc"\n', "server.port", "valid integer"),
        ("[server]\nport = 70000\n", "server.port", "less than or equal to 65535"),
        ("[greeter]\ngreeting = 5\n", "greeter.greeting", "valid string"),
        ("[greeter]\ncolour = 'red'\n", "greeter.colour", "unknown key"),
        ("[chatgpt]\nkey = 1\n", "chatgpt", "unknown section"),
        ("server = 3\n", "server", "expected a table [server]"),
        ('[server]\nsecret = { env = "KEFU_TEST_NOPE" }\n', "server.secret", "KEFU_TEST_NOPE"),
    ],
)
def test_errors_name_file_key_and_expectation(write_config, text, key, expect):
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_kernel(path, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ")
    assert expect in message
    assert "\n" not in message


def test_invalid_toml_names_file_and_line(write_config):
    path = write_config("[server\nport = 1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: invalid TOML: .*line 1"):
        load_kernel(path, environ={})


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match="kefu init"):
        load_kernel(tmp_path / "nope.toml", environ={})


def test_env_overrides_keys_with_toml_typed_values(write_config):
    path = write_config("[server]\nport = 9001\n")
    env = {
        "KEFU_SERVER__PORT": "9002",
        "KEFU_SERVER__RELOAD": "false",
        "KEFU_GREETER__BLOCKED_WORDS": '["spam", "scam"]',
        "KEFU_GREETER__GREETING": "plain string",
        "KEFU_MONGO_URL": "ignored: no double underscore",
    }
    kernel = load_kernel(path, environ=env)
    assert kernel.config.server.port == 9002
    assert kernel.config.server.reload is False
    greeter = kernel.config.section("greeter")
    assert greeter.blocked_words == ["spam", "scam"]
    assert greeter.greeting == "plain string"


def test_env_override_with_wrong_type_is_a_config_error(write_config):
    path = write_config("")
    with pytest.raises(ConfigError) as info:
        load_kernel(path, environ={"KEFU_SERVER__PORT": "eighty"})
    assert str(info.value).startswith(f"{path} (overridden by KEFU_SERVER__PORT): server.port:")


def test_secret_from_environment(write_config):
    path = write_config('[server]\nsecret = { env = "KEFU_TEST_SECRET" }\n')
    kernel = load_kernel(path, environ={"KEFU_TEST_SECRET": "s" * 40})
    assert kernel.secret == b"s" * 40


def test_secrets_resolve_inside_lists_and_nested_tables(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text('[a]\nb = [{ env = "X" }, 2]\n[a.c]\nd = { env = "Y" }\n')
    raw = read_raw(path, environ={"X": "1", "Y": "2"})
    assert raw == {"a": {"b": ["1", 2], "c": {"d": "2"}}}


def test_generated_secret_is_persisted_in_data_dir(data_dir_config):
    first = load_kernel(data_dir_config, environ={}).secret
    second = load_kernel(data_dir_config, environ={}).secret
    assert first == second and len(first) >= 32
