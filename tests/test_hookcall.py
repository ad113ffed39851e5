"""The async hook-call helpers and the typed facade's ordering rules."""

from __future__ import annotations

import pytest

from kefu.core.hookcall import HookFailures, call_all, call_all_sync, call_first, notify
from kefu.core.plugins import new_plugin_manager
from kefu.core.types import Processor
from kefu.hooks import hookimpl


def manager(*plugins):
    pm = new_plugin_manager()
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


class Answer:
    def __init__(self, value, is_async):
        self.value, self.is_async = value, is_async
        if is_async:

            async def impl(kernel, request, token):
                return value

        else:

            def impl(kernel, request, token):
                return value

        self.kefu_auth_authenticate = hookimpl(impl)


async def test_call_first_awaits_and_skips_none():
    pm = manager(("a", Answer("from-a", True)), ("none", Answer(None, True)))
    # pluggy order: last registered first -> "none" answers None, then "a"
    assert (
        await call_first(pm.hook.kefu_auth_authenticate, kernel=None, request=None, token=None)
        == "from-a"
    )


async def test_call_all_mixes_sync_and_async_and_names_plugins():
    pm = manager(("a", Answer(1, False)), ("b", Answer(2, True)), ("c", Answer(None, False)))
    results = await call_all(pm.hook.kefu_auth_authenticate, kernel=None, request=None, token=None)
    assert results == [("b", 2), ("a", 1)]


def test_call_all_sync_refuses_async_implementation():
    pm = manager(("late", Answer(1, True)))
    with pytest.raises(
        TypeError, match="plugin 'late': hook kefu_auth_authenticate must not be async"
    ):
        call_all_sync(pm.hook.kefu_auth_authenticate, kernel=None, request=None, token=None)


async def test_notify_isolates_and_counts():
    seen = []

    class Bad:
        @hookimpl
        def kefu_event(self, kernel, event):
            raise ValueError("boom")

    class Good:
        @hookimpl
        async def kefu_event(self, kernel, event):
            seen.append(event)

    pm = manager(("good", Good()), ("bad", Bad()))
    failures = HookFailures()
    failed = await notify(pm.hook.kefu_event, failures, kernel=None, event="e")
    assert failed == 1 and seen == ["e"]
    assert failures.counts == {("bad", "kefu_event"): 1} and failures.total() == 1


def test_pipeline_order_comes_from_priority_not_registration(data_dir_config):
    from kefu.core.kernel import load_kernel

    def plugin(name, priority):
        class P:
            @hookimpl
            def kefu_pipeline_processors(self, kernel):
                return [Processor(name, priority, None)]

        return P()

    kernel = load_kernel(
        data_dir_config,
        defaults=(),
        entry_points=False,
        extra_plugins=(("late", plugin("late", 10)), ("early", plugin("early", 90))),
    )
    assert [p.name for p in kernel.hooks.pipeline_processors()] == ["late", "early"]
