"""The bot of one kernel: flow files in, dialogue turns out, handoff to routing.

- **Taking conversations.** ``kefu_bot_takes`` answers True for a new conversation of a
  site that an active flow serves: the gateway stores it in state ``bot`` and routing
  is not asked (it listens to ``conversation.queued``). ``kefu_bot_serves`` answers the
  same per site, so the widget opens the chat instead of its offline form.
- **Turns.** On ``conversation.started`` the flow's greeting is stored as ``bot``
  messages. On ``message.stored`` from the visitor of a conversation in state ``bot``,
  ``kefu_bot_reply`` is asked (this plugin answers last, so another bot plugin may
  answer instead); the texts are stored and delivered like any message (cid
  ``bot-<seq>-<n>``, so a retried turn is stored once).
- **Sessions.** The dialogue state lives in ``conversation.meta["bot"]``, written with
  compare-and-set on the state ``bot``; it names its flow version, which it keeps.
- **Restarts, several processes.** Versions, active pointers and activations are
  storage records (:mod:`~kefu.plugins.bot_intents.store`; what an older kefu kept in
  ``<data_dir>/bot`` is copied in once), restored first at start-up; a flow file is then
  published only if it changed since it was last read. A process that saved a flow
  says so on the bus topic :data:`FLOWS_TOPIC`; the others read it again.
- **Handoff.** The conversation becomes ``queued`` (department from the flow, if any;
  ``meta.queued_at``, ``meta.bot_handoff``), then ``bot.handoff`` {conversation_id,
  reason, department, flow_id, version} and ``conversation.queued`` are emitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import watchfiles

from kefu.core.domain import BOT, QUEUED, Conversation, Message, new_id
from kefu.core.text import has_cjk
from kefu.core.types import BotReply
from kefu.plugins.bot_intents import enrichments, kb_feedback
from kefu.plugins.bot_intents.abtests import AbTests
from kefu.plugins.bot_intents.classifier import TrainingOptions
from kefu.plugins.bot_intents.demo import actions_of, bot_settings
from kefu.plugins.bot_intents.engine import CompiledFlow, Session
from kefu.plugins.bot_intents.faq import record_turn
from kefu.plugins.bot_intents.generative import generated_reply, reply_cid
from kefu.plugins.bot_intents.store import FlowStore, RecordFlowStore, import_folder
from kefu.plugins.bot_intents.strategy import Strategy
from kefu.plugins.bot_intents.versions import FlowRegistry, FlowRejected

log = logging.getLogger(__name__)

#: Seconds a worker holds a conversation's bot-turn lease at most (it crashed: freed).
TURN_LEASE_TTL_S = 30.0
#: Seconds a turn waits for another worker's turn of the same conversation.
TURN_LEASE_WAIT_S = 35.0

META_KEY = "bot"
#: Bus topic on which a process says it saved a flow's record: ``{"o": origin, "f": flow id}``.
FLOWS_TOPIC = "kefu.bot.flows"


class BotService:
    """Flows, sessions and the handoff of one running kernel."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.settings = settings = bot_settings(kernel)  # the example's with no config file
        self.executor = (
            ProcessPoolExecutor(settings.training_processes)
            if settings.training_processes
            else None
        )
        training = TrainingOptions(
            threshold=0.0,
            embedding_model=settings.embedding_model,
            embedding_layers=settings.embedding_layers,
        )
        self.registry = FlowRegistry(lambda: self.actions.keys(), self.executor, training)
        self.ab = AbTests(self, settings)  # dynamic replies and A/B tests (abtests.py)
        self.registry.known_names = self.ab.strategy.names
        self.registry.on_saved = self._tell_others
        self.origin = new_id()  # this service on the bus
        self._unsubscribe: Any = None
        self.actions: dict[str, Any] = {}
        self.paths = self._paths(settings)
        self.counts = {
            "turns": 0,
            "failed_turns": 0,
            "handoffs": 0,
            "reload_failures": 0,
            "knowledge_answers": 0,
            "generated_answers": 0,
            "generated_refusals": 0,
            "knowledge_helped": 0,
            "knowledge_not_helped": 0,
            "knowledge_unasked": 0,  # article answers without "did this help?" (shed)
        }
        self._locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None

    def _paths(self, settings: Any) -> list[str]:
        return [self._resolve(p) for p in settings.flows]

    def _resolve(self, path: str) -> str:
        base = Path(self.kernel.config_path).parent if self.kernel.config_path else Path.cwd()
        return os.path.realpath(base / path)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self.actions = actions_of(self.kernel)
        store = self.registry.store = RecordFlowStore(self.kernel.storage)  # shared, kept
        await import_folder(FlowStore(Path(self.kernel.data_dir) / "bot"), store)
        if self.kernel.bus is not None:
            self._unsubscribe = self.kernel.bus.subscribe(FLOWS_TOPIC, self._on_bus)
        await self.registry.restore()  # kept versions and active pointers (store.py)
        for path in self.paths:
            await self.load(path, startup=True)
        self._watch_paths()

    def _watch_paths(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self.paths and self.settings.watch:
            self._watcher = asyncio.create_task(self._watch(), name="kefu-bot-flows")

    async def settings_changed(self, old: Any, new: Any) -> None:
        """A live ``[bot]`` change: flow files added to ``flows`` are loaded at once and
        watched; a removed one stays active (say so); the demo actions follow the setting."""
        self.settings = bot_settings(self.kernel)
        self.ab.strategy = Strategy.from_settings(self.settings)  # campaigns, segments
        self.registry.known_names = self.ab.strategy.names
        paths = self._paths(self.settings)
        added = [p for p in paths if p not in self.paths]
        removed = [p for p in self.paths if p not in paths]
        self.paths = paths
        self.actions = actions_of(self.kernel)
        for path in added:
            flow = await self.load(path)
            log.info("bot flow %s added: %s", path, "active" if flow else "refused, see above")
        for path in removed:
            log.warning(
                "bot flow %s left [bot] flows: its flow stays active until a restart",
                path,
            )
        self._watch_paths()
        if old.training_processes != new.training_processes:
            log.warning("[bot] training_processes changes at the next restart")

    def _tell_others(self, flow_id: str) -> None:
        if self.kernel.bus is not None:
            self.kernel.bus.publish(FLOWS_TOPIC, orjson.dumps({"o": self.origin, "f": flow_id}))

    def _on_bus(self, topic: str, payload: bytes) -> None:
        try:
            news = orjson.loads(payload)
            flow_id = news["f"]
        except (ValueError, TypeError, KeyError):
            return
        if news.get("o") != self.origin and isinstance(flow_id, str):
            self.later(self.registry.refresh(flow_id))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [t for t in (self._watcher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def load(self, path: str, startup: bool = False) -> CompiledFlow | None:
        """Publish a flow file; a refused or unreadable one leaves the active version.

        At start-up a file whose content is the one last published from it is not
        activated again: the version active before the restart (perhaps another one,
        chosen through the admin API) stays. A file changed meanwhile is published.
        """
        try:
            data = await asyncio.to_thread(Path(path).read_bytes)
            if startup and await self._unchanged(path, data):
                return None
            return await self.registry.publish(data, path)
        except FlowRejected:
            self.counts["reload_failures"] += 1
        except OSError as exc:
            self.counts["reload_failures"] += 1
            self.registry.stats.last_error[path] = str(exc)
            log.error("bot flow %s unreadable, the active version stays: %s", path, exc)
        return None

    async def _watch(self) -> None:
        # folders, not files: editors often save by renaming a new file over the old one
        folders = sorted({os.path.dirname(p) for p in self.paths})
        wanted = set(self.paths)
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        async for changes in watchfiles.awatch(
            *folders,
            watch_filter=lambda _c, changed: os.path.realpath(changed) in wanted,
            recursive=False,
            debounce=200,
            step=50,
        ):
            for path in sorted({os.path.realpath(p) for _, p in changes}):  # noqa: ASYNC240
                if os.path.exists(path):  # noqa: ASYNC240 - a cheap lstat per change
                    await self.load(path)

    def later(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def lock(self, conversation_id: str) -> asyncio.Lock:
        found = self._locks.get(conversation_id)
        if found is None:
            found = self._locks[conversation_id] = asyncio.Lock()
        return found

    @contextlib.asynccontextmanager
    async def turn_lease(self, conversation_id: str) -> Any:
        """One bot turn at a time per conversation, in every process: the local lock,
        then a lease in the bus's shared state (two visitor messages may be stored by
        two workers at once)."""
        async with self.lock(conversation_id):
            bus = self.kernel.bus
            if bus is None:
                yield
                return
            key, owner = f"kefu:bot:turn:{conversation_id}", f"{bus.node_id}:{id(self)}"
            deadline = time.monotonic() + TURN_LEASE_WAIT_S
            while not await bus.state.lease(key, owner, ttl=TURN_LEASE_TTL_S):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bot turn lease of {conversation_id} stayed taken")
                await asyncio.sleep(0.05)
            try:
                yield
            finally:
                await bus.state.release(key, owner)

    # -- hooks ----------------------------------------------------------------------
    def takes(self, conversation: Conversation) -> bool:
        return self.serves(conversation.site_id)

    def serves(self, site_id: str) -> bool:
        """An active flow answers the site's new conversations (``kefu_bot_serves``)."""
        return self.registry.for_site(site_id) is not None

    async def _unchanged(self, path: str, data: bytes) -> bool:
        registry, sha = self.registry, hashlib.sha256(data).hexdigest()
        store = registry.store
        if store is None or await store.seen(path) != sha or sha not in registry.kept:
            return False
        return registry.kept[sha]["flow_id"] in registry.active

    async def activate(self, flow_id: str, sha: str) -> CompiledFlow:
        """Activate a kept version (compiled again if needed). :raises KeyError:"""
        flow = await self.registry.load(sha)
        if flow is None:
            raise KeyError(sha)
        return await self.registry.activate(flow_id, sha)

    async def rollback(self, flow_id: str) -> CompiledFlow:
        """Activate the version active before the current one. :raises KeyError:"""
        target = self.registry.rollback_target(flow_id)
        if target is None or await self.registry.load(target) is None:
            raise KeyError(flow_id)
        return await self.registry.rollback(flow_id)

    async def _session(self, conversation: Conversation) -> tuple[CompiledFlow, Session] | None:
        saved = conversation.meta.get(META_KEY)
        if isinstance(saved, dict):
            flow = await self.registry.load(str(saved.get("version")))
            if flow is not None:
                return flow, Session.from_dict(saved)
        return None

    async def _save(self, conversation: Conversation, session: Session) -> None:
        conversation.meta = {**conversation.meta, META_KEY: session.to_dict()}
        await self.kernel.storage.update_conversation(conversation, if_state=BOT)

    async def reply(self, conversation: Conversation, message: Message) -> BotReply | None:
        """The ``kefu_bot_reply`` answer: one turn of the conversation's session."""
        found = await self._session(conversation)
        texts: list[str] = []
        if found is None:
            flow = self.registry.for_site(conversation.site_id)
            if flow is None:
                return None
            session, _greeting = await flow.start(conversation.id, self.actions, message.text)
        else:
            flow, session = found
        feedback = await kb_feedback.answered(
            self.kernel, self.counts, conversation, message.seq, message.text or "", flow
        )
        if feedback is not None:  # "did this help?" answered: recorded
            return feedback
        enrich = enrichments(self.kernel)
        if flow.classifier is not None:  # shed under pressure: n-grams only (no encoder pass)
            flow.classifier.dense = enrich.embeddings
        try:
            context = await self.ab.context(conversation, flow)
            turn = await flow.step(session, message.text or "", self.actions, context)
        except Exception:
            self.counts["failed_turns"] += 1
            log.exception("bot turn failed in %s (%r)", conversation.id, flow)
            return None
        self.counts["turns"] += 1
        if turn.matched in ("fallback", "clarify"):  # no intent: a help article may answer
            article = await self._knowledge(conversation, message)
            if article is not None:
                return article
        texts.extend(turn.texts)
        # FAQ mining reads how the bot did on each visitor message (faq.py)
        record_turn(conversation, message.seq, turn.matched, turn.handoff is not None)
        ab_events = self.ab.note_turn(conversation, turn, flow)
        await self._save(conversation, session)
        await self.ab.announce(conversation.site_id, ab_events)
        if turn.handoff is None:
            return BotReply(tuple(texts), choices=turn.choices)
        return BotReply(tuple(texts), True, turn.handoff.reason, turn.handoff.department)

    async def _knowledge(self, conversation: Conversation, message: Message) -> BotReply | None:
        """A knowledge-base passage with its citation and "did this help?", or None; with a
        generative provider, its answer from the best passages (:mod:`.generative`)."""
        question = message.text or ""
        lang = "zh" if has_cjk(question) else "en"
        try:
            found = await self.kernel.hooks.bot_knowledge(conversation.site_id, question, lang)
        except Exception:
            log.exception("knowledge-base lookup failed")
            return None
        if found is None:
            return None
        self.counts["knowledge_answers"] += 1
        ask = enrichments(self.kernel).kb_feedback  # shed under pressure: no "did this help?"
        if self.kernel.hooks.bot_generates():
            sender = (conversation.meta.get(META_KEY) or {}).get("flow_id") or "bot"
            generated = await generated_reply(
                self.kernel, conversation, message, found, lang, sender, self.counts
            )
            if generated is not None:
                if generated.handoff:
                    return generated
                if not ask:
                    self.counts["knowledge_unasked"] += 1
                    return kb_feedback.unasked(generated, lang)
                return await kb_feedback.asked(self.kernel, conversation, message.seq, found,
                                               lang, generated)  # fmt: skip
        reply = BotReply(kb_feedback.answer_texts(found, lang))
        if not ask:
            self.counts["knowledge_unasked"] += 1
            return kb_feedback.unasked(reply, lang)
        return await kb_feedback.asked(self.kernel, conversation, message.seq, found, lang, reply)

    # -- events ---------------------------------------------------------------------
    async def on_event(self, event: Any) -> None:
        data, site_id = event.data, event.site_id
        if site_id is None or not self.registry.active:
            return
        await self.ab.on_event(event)
        if event.type == "conversation.started":
            self.later(self.greet(site_id, data["conversation_id"]))
        elif event.type == "message.stored" and data.get("sender_kind") == "visitor":
            delivery = self.kernel.delivery
            cached = delivery.cached(site_id, data["conversation_id"]) if delivery else None
            if cached is not None and cached.state != BOT:
                return  # most conversations are not the bot's: no task for them
            # off the sender's read loop: its ack is out already, the turn follows
            self.later(self._turn_if_bot(site_id, data["conversation_id"], int(data["seq"])))

    async def greet(self, site_id: str, conversation_id: str) -> None:
        try:
            async with self.turn_lease(conversation_id):
                storage = self.kernel.storage
                conversation = await storage.get_conversation(site_id, conversation_id)
                if conversation is None or conversation.state != BOT:
                    return
                if await self._session(conversation) is not None:
                    return  # the visitor spoke first
                flow = self.registry.for_site(site_id)
                if flow is None:
                    return
                context = await self.ab.context(conversation, flow)
                language = await self._visitor_language(conversation)
                session, turn = await flow.start(
                    conversation_id, self.actions, context=context, language=language
                )
                ab_events = self.ab.note_turn(conversation, turn, flow)
                await self._save(conversation, session)
                await self._deliver(conversation, turn.texts, "greeting")
                await self.ab.announce(site_id, ab_events)
        except Exception:
            log.exception("bot greeting for %s failed", conversation_id)

    async def _visitor_language(self, conversation: Conversation) -> str | None:
        """The visitor's language before they wrote anything: the widget's (its
        ``language`` attribute: data-lang, the visitor's choice or the browser's)."""
        visitor = await self.kernel.storage.get_visitor(
            conversation.site_id, conversation.visitor_id
        )
        wanted = visitor.attributes.get("language") if visitor is not None else None
        return wanted.lower()[:2] if isinstance(wanted, str) and wanted else None

    async def _turn_if_bot(self, site_id: str, conversation_id: str, seq: int) -> None:
        delivery = self.kernel.delivery
        if delivery is not None:  # the cached record: most conversations are not the bot's
            cached = await delivery.conversation(site_id, conversation_id)
            if cached is None or cached.state != BOT:
                return
        try:
            await self.turn(site_id, conversation_id, seq)
        except Exception:
            log.exception("bot turn for %s (seq %s) failed", conversation_id, seq)

    async def turn(self, site_id: str, conversation_id: str, seq: int) -> None:
        """Answer the visitor's message ``seq`` if the conversation is the bot's."""
        async with self.turn_lease(conversation_id):
            storage = self.kernel.storage
            conversation = await storage.get_conversation(site_id, conversation_id)
            if conversation is None or conversation.state != BOT:
                return
            found = await storage.list_messages(
                site_id, conversation_id, after_seq=seq - 1, limit=1
            )
            if not found or found[0].sender_kind != "visitor":
                return
            answer = await self.kernel.hooks.bot_reply(conversation, found[0])
            if answer is None:
                return
            await self._deliver(conversation, answer.texts, str(seq), answer.choices)
            if answer.handoff:
                await self.hand_off(conversation, answer.handoff_reason, answer.department)

    async def _deliver(
        self, conversation: Conversation, texts: tuple[str, ...], key: str, choices: tuple = ()
    ) -> None:
        delivery = self.kernel.delivery
        if delivery is None:
            return
        sender = (conversation.meta.get(META_KEY) or {}).get("flow_id") or "bot"
        for i, text in enumerate(texts):
            message = Message(
                conversation.site_id, conversation.id, reply_cid(key, i), "bot", sender, text=text
            )
            if choices and i == len(texts) - 1:  # quick replies (meta.choices) with the last
                message.meta = {"choices": list(choices)}
            await delivery.deliver(conversation, message, transport="bot")

    async def hand_off(
        self, conversation: Conversation, reason: str | None, department: str | None
    ) -> bool:
        """Move a bot conversation to the queue and tell routing; False if it moved already."""
        storage = self.kernel.storage
        fresh = await storage.get_conversation(conversation.site_id, conversation.id)
        if fresh is None or fresh.state != BOT:
            return False
        now = time.time()
        saved = fresh.meta.get(META_KEY) or {}
        fresh.state, fresh.updated_at = QUEUED, now
        if department and not await self._served(fresh.site_id, department):
            # nobody serves it: the chat would wait forever; any agent takes it instead
            log.info(
                "bot handoff of %s: no agent serves department %r, queued for any agent",
                fresh.id,
                department,
            )
            fresh.meta = {**fresh.meta, "requested_department": department}
            department = None
        if department:
            fresh.department = department
        fresh.meta = {**fresh.meta, "queued_at": now, "bot_handoff": {"reason": reason, "at": now}}
        if not await storage.update_conversation(fresh, if_state=BOT):
            return False
        self.counts["handoffs"] += 1
        site_id = fresh.site_id
        await self.kernel.emit(
            "bot.handoff",
            site_id,
            conversation_id=fresh.id,
            reason=reason,
            department=fresh.department,
            flow_id=saved.get("flow_id"),
            version=saved.get("version"),
        )
        await self.kernel.emit("conversation.queued", site_id, conversation_id=fresh.id)
        return True

    async def _served(self, site_id: str, department: str) -> bool:
        """Some agent of the site has the department among their skills."""
        agents = await self.kernel.storage.list_agents(site_id)
        return any(department in agent.skills for agent in agents)

    def stats(self) -> dict[str, Any]:
        s = self.registry.stats
        return {
            **{f"bot_{name}": value for name, value in self.counts.items()},
            "bot_flow_versions": len(self.registry.versions),
            "bot_flows_published": s.published,
            "bot_flows_rejected": s.rejected,
            "bot_flow_activations": s.activations,
            "bot_flows_active": len(self.registry.active),
            **{f"bot_ab_{name}": value for name, value in self.ab.counts.items()},
        }
