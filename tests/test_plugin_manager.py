"""The plugin manager factory: defaults, entry points, config-named, disabled, required, strict."""

from __future__ import annotations

import logging

import pytest

from kefu.core.errors import StartupError
from kefu.core.kernel import load_kernel
from kefu.core.plugins import DEFAULT_PLUGINS, ESSENTIAL_PLUGINS, make_plugin_manager
from kefu.hooks import hookimpl


def names(plugin_set, enabled=True):
    return {r.name for r in plugin_set.records if r.enabled is enabled}


def test_defaults_and_entry_point_plugins_are_registered():
    plugin_set = make_plugin_manager()
    builtin = {d.rsplit(".", 1)[-1] for d in DEFAULT_PLUGINS}
    assert builtin <= names(plugin_set)
    greeter = plugin_set.record("greeter")  # examples/kefu-greeter, installed by make test
    assert greeter is not None and greeter.origin == "entrypoint"
    assert greeter.version == "0.2.0"
    assert "kefu_routes" in greeter.hooks


def test_disabled_plugin_is_blocked_and_reported():
    plugin_set = make_plugin_manager(disable=["greeter", "bus_memory"])
    assert {"greeter", "bus_memory"} <= names(plugin_set, enabled=False)
    assert plugin_set.pm.get_plugin("greeter") is None
    assert plugin_set.pm.is_blocked("greeter")


def test_essential_plugin_cannot_be_disabled():
    if not ESSENTIAL_PLUGINS:
        pytest.skip("no essential plugin defined yet")
    name = sorted(ESSENTIAL_PLUGINS)[0]
    with pytest.raises(StartupError, match=f"{name!r} is essential"):
        make_plugin_manager(disable=[name])


def test_config_named_plugin_is_registered_by_dotted_path():
    plugin_set = make_plugin_manager(enable=["tests.plugins.raising_listener"])
    record = plugin_set.record("tests.plugins.raising_listener")
    assert record.origin == "config" and record.enabled
    assert record.hooks == ["kefu_event"]


def test_plugin_whose_import_fails_is_skipped_with_reason(caplog):
    with caplog.at_level(logging.WARNING):
        plugin_set = make_plugin_manager(enable=["tests.plugins.broken_import"])
    record = plugin_set.record("tests.plugins.broken_import")
    assert record.enabled is False
    assert "ImportError" in record.error
    assert "tests.plugins.broken_import" in caplog.text
    assert "not installed" in caplog.text


def test_required_plugin_that_fails_to_import_stops_startup():
    with pytest.raises(StartupError, match="required plugin 'tests.plugins.broken_import'"):
        make_plugin_manager(
            enable=["tests.plugins.broken_import"], require=["tests.plugins.broken_import"]
        )


def test_required_plugin_that_is_missing_stops_startup_naming_it():
    with pytest.raises(StartupError, match="required plugin 'kefu-sso'.*not installed"):
        make_plugin_manager(require=["kefu-sso"])


def test_misspelled_hook_fails_naming_plugin_and_hook():
    with pytest.raises(StartupError) as info:
        make_plugin_manager(enable=["tests.plugins.misspelled_hook"])
    message = str(info.value)
    assert "tests.plugins.misspelled_hook" in message
    assert "kefu_evnt" in message and "kefu_event" in message  # with a suggestion


def test_unmarked_hook_implementation_fails():
    with pytest.raises(StartupError, match="not marked with @hookimpl"):
        make_plugin_manager(enable=["tests.plugins.unmarked_hook"])


def test_implementation_with_unknown_argument_fails_naming_plugin():
    with pytest.raises(StartupError, match="tests.plugins.wrong_args.*router"):
        make_plugin_manager(enable=["tests.plugins.wrong_args"])


def test_third_party_answers_before_builtin_fallback(data_dir_config):
    """Built-in registries are trylast; a later plugin's answer comes first."""

    class OtherBus:
        @hookimpl
        def kefu_bus_backends(self):
            return {"other": lambda kernel: None}

    kernel = load_kernel(data_dir_config, extra_plugins=(("other-bus", OtherBus()),))
    assert next(iter(kernel.hooks.bus_backends())) == "other"


def test_same_backend_name_from_two_plugins_fails_naming_both(data_dir_config):
    class Clash:
        @hookimpl
        def kefu_bus_backends(self):
            return {"memory": lambda kernel: None}

    kernel = load_kernel(data_dir_config, extra_plugins=(("clash", Clash()),))
    with pytest.raises(StartupError, match="'memory' is provided by both plugin"):
        kernel.make_bus()


def test_unknown_backend_name_lists_available(write_config, tmp_path):
    path = write_config(f'[server]\ndata_dir = "{tmp_path}"\n[bus]\nbackend = "kafka"\n')
    kernel = load_kernel(path)
    with pytest.raises(StartupError, match=r"unknown bus 'kafka' \(available: .*memory"):
        kernel.make_bus()


def test_plugin_offered_twice_is_registered_once(caplog):
    with caplog.at_level(logging.WARNING):
        plugin_set = make_plugin_manager(
            enable=["tests.plugins.raising_listener", "tests.plugins.raising_listener"]
        )
    assert [r.name for r in plugin_set.records].count("tests.plugins.raising_listener") == 1
    assert "offered again" in caplog.text


def test_raising_sync_hook_is_a_one_line_startup_error(data_dir_config):
    class Broken:
        @hookimpl
        def kefu_routes(self, kernel):
            raise KeyError("route table")

    from kefu.core.web_app import create_app

    kernel = load_kernel(data_dir_config, extra_plugins=(("broken", Broken()),))
    with pytest.raises(StartupError, match="plugin 'broken' failed in hook kefu_routes: KeyError"):
        create_app(kernel)
