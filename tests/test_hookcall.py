"""The async hook-call helpers and the typed facade's ordering rules."""

from __future__ import annotations

import pytest

from kefu.core.hookcall import (
    HookFailures,
    call_all,
    call_all_sync,
    call_first,
    notify,
    notify_event,
)
from kefu.core.plugins import new_plugin_manager
from kefu.core.types import Event, Processor
from kefu.hooks import hookimpl, listens_to


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


# -- the cached call plan (issue 11) ----------------------------------------------


class Listener:
    """A ``kefu_event`` implementation that records its name, sync or async."""

    def __init__(self, name, seen, is_async=False, **marks):
        if is_async:

            async def kefu_event(kernel, event):
                seen.append(name)

        else:

            def kefu_event(kernel, event):
                seen.append(name)

        self.kefu_event = hookimpl(**marks)(kefu_event)


async def test_the_cached_order_follows_register_and_unregister():
    seen = []
    pm = manager(("a", Listener("a", seen)), ("b", Listener("b", seen, is_async=True)))
    await notify(pm.hook.kefu_event, kernel=None, event="e")
    assert seen == ["b", "a"]

    seen.clear()
    pm.register(Listener("c", seen), name="c")
    await notify(pm.hook.kefu_event, kernel=None, event="e")
    assert seen == ["c", "b", "a"]  # the last registered first

    seen.clear()
    pm.unregister(name="b")
    await notify(pm.hook.kefu_event, kernel=None, event="e")
    assert seen == ["c", "a"]

    seen.clear()  # as many implementations as before, not the same ones
    pm.unregister(name="a")
    pm.register(Listener("d", seen, is_async=True), name="d")
    await notify(pm.hook.kefu_event, kernel=None, event="e")
    assert seen == ["d", "c"]


async def test_call_first_sees_a_plugin_registered_after_the_first_call():
    pm = manager(("a", Answer("from-a", False)))
    hook = pm.hook.kefu_auth_authenticate
    assert await call_first(hook, kernel=None, request=None, token=None) == "from-a"
    pm.register(Answer("from-b", True), name="b")
    assert await call_first(hook, kernel=None, request=None, token=None) == "from-b"
    pm.unregister(name="b")
    assert await call_first(hook, kernel=None, request=None, token=None) == "from-a"
    pm.unregister(name="a")
    assert await call_first(hook, kernel=None, request=None, token=None) is None


def test_call_all_sync_sees_a_plugin_registered_after_the_first_call():
    pm = manager(("a", Answer(1, False)))
    hook = pm.hook.kefu_auth_authenticate
    assert call_all_sync(hook, kernel=None, request=None, token=None) == [("a", 1)]
    pm.register(Answer(2, False), name="b")
    assert call_all_sync(hook, kernel=None, request=None, token=None) == [("b", 2), ("a", 1)]


async def test_order_is_pluggys_tryfirst_trylast_and_last_registered_first():
    seen = []
    pm = manager(
        ("last", Listener("last", seen, trylast=True)),
        ("first", Listener("first", seen, tryfirst=True, is_async=True)),
        ("plain1", Listener("plain1", seen)),
        ("first2", Listener("first2", seen, tryfirst=True)),
        ("plain2", Listener("plain2", seen, is_async=True)),
    )
    await notify(pm.hook.kefu_event, kernel=None, event="e")
    pluggys = [impl.plugin_name for impl in reversed(pm.hook.kefu_event.get_hookimpls())]
    assert seen == pluggys == ["first2", "first", "plain2", "plain1", "last"]


async def test_a_plain_def_that_returns_an_awaitable_is_awaited():
    class Deferred:
        """Awaitable without being a coroutine."""

        def __await__(self):
            yield from ()
            return "deferred"

    class Returns:
        def __init__(self, make):
            self.kefu_auth_authenticate = hookimpl(lambda kernel, request, token: make())

    async def later():
        return "later"

    for make, expected in ((later, "later"), (Deferred, "deferred")):
        pm = manager(("p", Returns(make)))
        hook = pm.hook.kefu_auth_authenticate
        for _ in range(2):  # the second time the answer's type is known
            assert await call_first(hook, kernel=None, request=None, token=None) == expected
            assert await call_all(hook, kernel=None, request=None, token=None) == [("p", expected)]
        with pytest.raises(TypeError, match="must not be async"):
            call_all_sync(hook, kernel=None, request=None, token=None)


async def test_notify_awaits_what_a_plain_def_returns_and_isolates_its_failure():
    seen = []

    async def fails():
        raise ValueError("late boom")

    class Deferring:
        @hookimpl
        def kefu_event(self, kernel, event):
            seen.append(event)
            return fails()

    pm = manager(("deferring", Deferring()), ("good", Listener("good", seen)))
    failures = HookFailures()
    assert await notify(pm.hook.kefu_event, failures, kernel=None, event="e") == 1
    assert seen == ["good", "e"] and failures.counts == {("deferring", "kefu_event"): 1}


async def test_a_subset_hook_caller_is_called_uncached():
    seen = []
    pm = manager(("a", Listener("a", seen)), ("b", Listener("b", seen)))
    subset = pm.subset_hook_caller("kefu_event", remove_plugins=[pm.get_plugin("a")])
    await notify(subset, kernel=None, event="e")
    await notify(subset, kernel=None, event="e")
    assert seen == ["b", "b"]


async def test_an_implementation_may_take_a_subset_of_the_arguments():
    class Few:
        @hookimpl
        def kefu_auth_permits(self, action):
            return action == "x"

    class NoArgs:
        @hookimpl
        def kefu_auth_permits(self):
            return None

    pm = manager(("few", Few()), ("none", NoArgs()))
    hook = pm.hook.kefu_auth_permits
    assert await call_first(hook, kernel=None, principal=None, action="x", resource=None)


class TypedListener:
    """A ``kefu_event`` implementation, marked with ``listens_to(*types)`` when given."""

    def __init__(self, seen, name, types=None, is_async=False):
        if is_async:

            async def kefu_event(kernel, event):
                seen.append((name, event.type))

        else:

            def kefu_event(kernel, event):
                seen.append((name, event.type))

        if types is not None:
            kefu_event = listens_to(*types)(kefu_event)
        self.kefu_event = hookimpl(kefu_event)


async def test_an_event_reaches_only_the_listeners_of_its_type():
    seen = []
    pm = manager(
        ("all", TypedListener(seen, "all")),
        ("stored", TypedListener(seen, "stored", ["message.stored"], is_async=True)),
        ("convs", TypedListener(seen, "convs", ["conversation.*", "agent.updated"])),
    )
    hook = pm.hook.kefu_event
    for kind in ("message.stored", "conversation.resolved", "agent.updated", "conversation"):
        await notify_event(hook, None, kind, kernel=None, event=Event(kind, "s", {}))
    assert seen == [
        ("stored", "message.stored"),
        ("all", "message.stored"),
        ("convs", "conversation.resolved"),
        ("all", "conversation.resolved"),
        ("convs", "agent.updated"),
        ("all", "agent.updated"),
        ("all", "conversation"),  # "conversation.*" is a prefix with its dot
    ]
    # a plugin registered later is seen by the type's next event (the plans are rebuilt)
    seen.clear()
    pm.register(TypedListener(seen, "late", ["message.stored"]), name="late")
    await notify_event(hook, None, "message.stored", kernel=None, event=Event("message.stored"))
    assert [name for name, _ in seen] == ["late", "stored", "all"]
    pm.unregister(name="stored")
    seen.clear()
    await notify_event(hook, None, "message.stored", kernel=None, event=Event("message.stored"))
    assert [name for name, _ in seen] == ["late", "all"]


def test_listens_to_needs_a_type():
    with pytest.raises(TypeError):
        listens_to()
