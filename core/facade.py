"""The typed hook facade: one method per hook, so kernel code never touches ``pm.hook``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from kefu.core.errors import ConfigError, StartupError
from kefu.core.hookcall import (
    HookFailures,
    call_all,
    call_all_sync,
    call_first,
    collect_sync,
    notify,
    notify_event,
)
from kefu.core.types import (
    BotReply,
    CliCommand,
    DegradableFeature,
    Event,
    PressureReading,
    Principal,
    Processor,
    RestEndpoint,
    RoutingFilter,
    TextEncoder,
    TransportInfo,
    VisitorIdentity,
    WeightFactor,
)

if TYPE_CHECKING:
    import pluggy
    from aiohttp import web


def _flatten(results: list[tuple[str, Any]]) -> list[Any]:
    return [item for _, items in results for item in items]


def merge_named(kind: str, results: list[tuple[str, dict]]) -> dict[str, tuple[str, Any]]:
    """Merge ``{name: value}`` answers; a name claimed twice fails naming both plugins."""
    merged: dict[str, tuple[str, Any]] = {}
    for plugin, mapping in results:
        for name, value in mapping.items():
            if name in merged:
                raise StartupError(
                    f"{kind} {name!r} is provided by both plugin {merged[name][0]!r} "
                    f"and plugin {plugin!r}; disable one of them"
                )
            merged[name] = (plugin, value)
    return merged


def choose_named(kind: str, registry: dict[str, tuple[str, Any]], name: str) -> Any:
    """Pick a single-slot provider by its configured name, never by registration order."""
    if name not in registry:
        available = ", ".join(sorted(registry)) or "none"
        raise StartupError(
            f"unknown {kind} {name!r} (available: {available}); "
            "is the plugin that provides it installed and enabled?"
        )
    return registry[name][1]


class HookFacade:
    """Calls the hooks for the kernel and for plugins that need other plugins' answers."""

    def __init__(self, pm: pluggy.PluginManager, kernel: Any, failures: HookFailures) -> None:
        self._hook = pm.hook
        self._kernel = kernel
        self.failures = failures

    # -- lifecycle --------------------------------------------------------
    def config_schema(self, source: str) -> dict[str, type[BaseModel]]:
        merged = {}
        for plugin, mapping in call_all_sync(self._hook.kefu_config_schema):
            for section, model in mapping.items():
                if section in merged:
                    raise ConfigError(
                        source, section, f"section declared by two plugins (second: {plugin!r})"
                    )
                merged[section] = model
        return merged

    async def config_changed(self, section: str, old: Any, new: Any) -> None:
        await notify(
            self._hook.kefu_config_changed,
            self.failures,
            kernel=self._kernel,
            section=section,
            old=old,
            new=new,
        )

    def lifespans(self) -> list[tuple[str, Callable | None, Callable | None]]:
        """``(plugin, startup, shutdown)`` in registration order, for per-plugin lifespans.

        The kernel starts them in this order and stops them in reverse, so a
        plugin is only ever stopped after it started.
        """
        starts = {i.plugin_name: i.function for i in self._hook.kefu_startup.get_hookimpls()}
        stops = {i.plugin_name: i.function for i in self._hook.kefu_shutdown.get_hookimpls()}
        order = [i.plugin_name for i in self._hook.kefu_startup.get_hookimpls()]
        order += [n for n in stops if n not in starts]
        return [(name, starts.get(name), stops.get(name)) for name in order]

    async def shutdown_requested(self) -> None:
        await notify(self._hook.kefu_shutdown_requested, self.failures, kernel=self._kernel)

    def ready_checks(self) -> dict[str, Callable]:
        return {
            name: check
            for _, mapping in call_all_sync(self._hook.kefu_ready_checks, kernel=self._kernel)
            for name, check in mapping.items()
        }

    def routes(self) -> list[web.RouteDef]:
        return _flatten(call_all_sync(self._hook.kefu_routes, kernel=self._kernel))

    def rest_endpoints(self) -> list[RestEndpoint]:
        """Every plugin's REST endpoints; a method and path claimed twice fails naming both."""
        found: dict[tuple[str, str], tuple[str, RestEndpoint]] = {}
        for plugin, endpoints in call_all_sync(self._hook.kefu_rest_endpoints, kernel=self._kernel):
            for endpoint in endpoints:
                key = (endpoint.method.upper(), endpoint.path)
                if key in found:
                    raise StartupError(
                        f"REST endpoint {key[0]} {key[1]} is provided by both plugin "
                        f"{found[key][0]!r} and plugin {plugin!r}; disable one of them"
                    )
                found[key] = (plugin, endpoint)
        return [endpoint for _, endpoint in found.values()]

    def middlewares(self) -> list[Callable]:
        pairs = [
            (priority, plugin, mw)
            for plugin, items in call_all_sync(self._hook.kefu_middlewares, kernel=self._kernel)
            for priority, mw in items
        ]
        return [mw for _, _, mw in sorted(pairs, key=lambda p: (p[0], p[1]))]

    def cli_commands(self) -> list[CliCommand]:
        return _flatten(call_all_sync(self._hook.kefu_cli_commands))

    # -- transport ----------------------------------------------------------
    def transport_adapters(self) -> list[TransportInfo]:
        return _flatten(call_all_sync(self._hook.kefu_transport_adapters, kernel=self._kernel))

    def transport_frame_handlers(self) -> dict[str, Callable]:
        results = call_all_sync(self._hook.kefu_transport_frame_handlers, kernel=self._kernel)
        return {op: h for op, (_, h) in merge_named("frame op", results).items()}

    async def transport_connected(self, connection: Any) -> None:
        await notify(
            self._hook.kefu_transport_connected,
            self.failures,
            kernel=self._kernel,
            connection=connection,
        )

    async def transport_disconnected(self, connection: Any, reason: str) -> None:
        await notify(
            self._hook.kefu_transport_disconnected,
            self.failures,
            kernel=self._kernel,
            connection=connection,
            reason=reason,
        )

    # -- auth ---------------------------------------------------------------
    def has_auth(self) -> bool:
        return bool(self._hook.kefu_auth_permits.get_hookimpls())

    async def authenticate(self, request: Any, token: str | None) -> Principal | None:
        return await call_first(
            self._hook.kefu_auth_authenticate, kernel=self._kernel, request=request, token=token
        )

    async def permits(self, principal: Principal | None, action: str, resource: Any) -> bool:
        answer = await call_first(
            self._hook.kefu_auth_permits,
            kernel=self._kernel,
            principal=principal,
            action=action,
            resource=resource,
        )
        return answer is True

    async def hash_password(self, password: str) -> str | None:
        """The auth plugin's hash of ``password`` for a stored agent, or None without one."""
        return await call_first(
            self._hook.kefu_auth_hash_password, kernel=self._kernel, password=password
        )

    async def revoke(self, site_id: str, agent_id: str, reason: str) -> int:
        """End every session of an agent in every auth plugin; how many were ended."""
        results = await call_all(
            self._hook.kefu_auth_revoke,
            kernel=self._kernel,
            site_id=site_id,
            agent_id=agent_id,
            reason=reason,
        )
        return sum(int(n) for _, n in results)

    async def end_session(self, token: str) -> bool:
        """Log out the session ``token`` belongs to; True when one was ended."""
        answer = await call_first(
            self._hook.kefu_auth_end_session, kernel=self._kernel, token=token
        )
        return answer is True

    async def visitor_identity(
        self, site: Any, claim: dict[str, str | None], visitor_id: str | None
    ) -> VisitorIdentity | None:
        """The contact a visitor identity claim names, or None when no plugin checks claims;
        a refused claim raises :class:`kefu.core.errors.ApiError`."""
        return await call_first(
            self._hook.kefu_auth_visitor_identity,
            kernel=self._kernel,
            site=site,
            claim=claim,
            visitor_id=visitor_id,
        )

    async def account_states(self, site_id: str) -> dict[str, dict[str, Any]]:
        """Agents of a site whose account is not in its default state (disabled, deleted)."""
        answer = await call_first(
            self._hook.kefu_auth_account_states, kernel=self._kernel, site_id=site_id
        )
        return answer or {}

    # -- pipeline -----------------------------------------------------------
    def pipeline_processors(self) -> list[Processor]:
        found = _flatten(call_all_sync(self._hook.kefu_pipeline_processors, kernel=self._kernel))
        return sorted(found, key=lambda p: (p.priority, p.name))

    # -- single-slot registries --------------------------------------------
    def storage_backends(self) -> dict[str, tuple[str, Callable]]:
        return merge_named("storage backend", call_all_sync(self._hook.kefu_storage_backends))

    def bus_backends(self) -> dict[str, tuple[str, Callable]]:
        return merge_named("bus", call_all_sync(self._hook.kefu_bus_backends))

    def routing_policies(self) -> dict[str, tuple[str, Callable]]:
        return merge_named("routing policy", call_all_sync(self._hook.kefu_routing_policies))

    # -- routing --------------------------------------------------------------
    def routing_filters(self) -> list[RoutingFilter]:
        return _flatten(call_all_sync(self._hook.kefu_routing_filters, kernel=self._kernel))

    def routing_weight_factors(self) -> list[WeightFactor]:
        found = call_all_sync(self._hook.kefu_routing_weight_factors, kernel=self._kernel)
        return sorted(_flatten(found), key=lambda f: f.name)

    # -- bot ----------------------------------------------------------------
    async def bot_reply(self, conversation: Any, message: Any) -> BotReply | None:
        return await call_first(
            self._hook.kefu_bot_reply,
            kernel=self._kernel,
            conversation=conversation,
            message=message,
        )

    async def bot_knowledge(self, site_id: str, question: str, lang: str) -> Any:
        """The best help-article passage for a question, or None (``kefu_bot_knowledge``)."""
        return await call_first(
            self._hook.kefu_bot_knowledge,
            kernel=self._kernel,
            site_id=site_id,
            question=question,
            lang=lang,
        )

    async def bot_passages(self, site_id: str, question: str, lang: str, limit: int) -> Any:
        """The best passages for a question, best first, or None (``kefu_bot_passages``)."""
        return await call_first(
            self._hook.kefu_bot_passages,
            kernel=self._kernel,
            site_id=site_id,
            question=question,
            lang=lang,
            limit=limit,
        )

    def bot_text_encoders(self) -> dict[str, TextEncoder]:
        """The sentence encoder of each language that plugins offer, the lowest priority
        of a language (``kefu_bot_text_encoders``)."""
        offered = _flatten(call_all_sync(self._hook.kefu_bot_text_encoders, kernel=self._kernel))
        found: dict[str, TextEncoder] = {}
        for encoder in sorted(offered, key=lambda e: (e.priority, e.name)):
            found.setdefault(encoder.lang, encoder)
        return found

    async def bot_generate(
        self,
        site_id: str,
        question: str,
        passages: Any,
        lang: str,
        on_text: Callable[[str], Awaitable[None]],
    ) -> Any:
        """An answer composed from passages, or None (``kefu_bot_generate``)."""
        return await call_first(
            self._hook.kefu_bot_generate,
            kernel=self._kernel,
            site_id=site_id,
            question=question,
            passages=passages,
            lang=lang,
            on_text=on_text,
        )

    def bot_generates(self) -> bool:
        """Some enabled plugin implements ``kefu_bot_generate``."""
        return bool(self._hook.kefu_bot_generate.get_hookimpls())

    async def bot_takes(self, conversation: Any) -> bool:
        """Whether a bot answers this new conversation first (``kefu_bot_takes``)."""
        answer = await call_first(
            self._hook.kefu_bot_takes, kernel=self._kernel, conversation=conversation
        )
        return answer is True

    async def bot_serves(self, site_id: str) -> bool:
        """Whether a bot answers the site's new conversations now (``kefu_bot_serves``)."""
        answer = await call_first(self._hook.kefu_bot_serves, kernel=self._kernel, site_id=site_id)
        return answer is True

    def bot_actions(self) -> dict[str, Callable]:
        results = call_all_sync(self._hook.kefu_bot_actions)
        return {name: action for name, (_, action) in merge_named("bot action", results).items()}

    # -- degradation --------------------------------------------------------
    def degradation_features(self) -> list[DegradableFeature]:
        found = call_all_sync(self._hook.kefu_degradation_features, kernel=self._kernel)
        return sorted(_flatten(found), key=lambda f: (f.priority, f.name))

    async def degradation_pressure(self) -> list[PressureReading]:
        results = await call_all(self._hook.kefu_degradation_pressure, kernel=self._kernel)
        return _flatten(results)

    async def degradation_level_changed(self, old: int, new: int) -> None:
        await notify(
            self._hook.kefu_degradation_level_changed,
            self.failures,
            kernel=self._kernel,
            old=old,
            new=new,
        )

    # -- events -------------------------------------------------------------
    async def event(self, event: Event) -> None:
        await notify_event(
            self._hook.kefu_event, self.failures, event.type, kernel=self._kernel, event=event
        )

    def stats(self) -> list[tuple[str, dict]]:
        """``(plugin, statistics)`` from every ``kefu_stats``; a raising plugin is left out."""
        return collect_sync(self._hook.kefu_stats, self.failures, kernel=self._kernel)
