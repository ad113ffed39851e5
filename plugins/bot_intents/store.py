"""Where flow versions are kept, so that they and the active choice survive a restart.

:class:`RecordFlowStore` (the one a running kefu uses) keeps them as storage records,
shared by every process and node on that storage; :class:`FlowStore` is the folder an
older kefu kept them in, read once into the records (:func:`import_folder`). Both have
the same async interface (:class:`FlowStoreLike`).

Folder layout under ``<data_dir>/bot/``::

    versions/<sha256>.yaml   the exact content of every accepted version (stored once)
    flows/<flow id>.json     {"id", "active", "versions": [...], "activations": [...]}
    files.json               {source: sha256}: the content last published from each file

Every write is atomic (a temporary file in the same folder, fsync, ``os.replace``), so a
crash leaves the old or the new file, never half of one. A version file is checked
against its name when read; one that does not match is treated as missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

from kefu.core.storage import INSTALL, VersionConflict

log = logging.getLogger(__name__)

_SHA = re.compile(r"[0-9a-f]{64}")
MAX_ACTIVATIONS = 200  # activation log entries kept per flow


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (temp file + fsync + os.replace)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:  # a new file is private (0600); a replaced one keeps its mode (a flow file's)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


class FlowStore:
    """The on-disk record of a :class:`~kefu.plugins.bot_intents.versions.FlowRegistry`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._files: dict[str, str] | None = None

    def _version_path(self, sha: str) -> Path:
        if not _SHA.fullmatch(sha):
            raise ValueError(f"not a sha256: {sha!r}")
        return self.root / "versions" / f"{sha}.yaml"

    # -- version contents ---------------------------------------------------------------
    async def has(self, sha: str) -> bool:
        return _SHA.fullmatch(sha) is not None and self._version_path(sha).is_file()

    async def save_version(self, sha: str, raw: bytes) -> bool:
        return await asyncio.to_thread(self._save_version, sha, raw)

    def _save_version(self, sha: str, raw: bytes) -> bool:
        """Store a version's content once; False when it was stored already."""
        path = self._version_path(sha)
        if path.is_file():
            return False
        if hashlib.sha256(raw).hexdigest() != sha:
            raise ValueError("content does not match its sha256")
        write_atomic(path, raw)
        return True

    async def read(self, sha: str) -> bytes | None:
        return await asyncio.to_thread(self._read, sha)

    def _read(self, sha: str) -> bytes | None:
        """A version's content, or None when missing or not matching its hash."""
        try:
            raw = self._version_path(sha).read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(raw).hexdigest() != sha:
            log.error("bot flow store: %s does not match its sha256; ignored", sha[:12])
            return None
        return raw

    # -- flows: versions, active pointer, activations -------------------------------------
    async def save_flow(self, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "activations": record.get("activations", [])[-MAX_ACTIVATIONS:]}
        data = json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8")
        await asyncio.to_thread(write_atomic, self.root / "flows" / f"{record['id']}.json", data)
        return record

    async def flow(self, flow_id: str) -> dict[str, Any] | None:
        return next((r for r in await self.flows() if r["id"] == flow_id), None)

    async def flows(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._flows)

    def _flows(self) -> list[dict[str, Any]]:
        """Every stored flow record (unreadable ones are logged and skipped)."""
        found = []
        for path in sorted((self.root / "flows").glob("*.json")):
            try:
                record = json.loads(path.read_bytes())
                if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                    raise ValueError("not a flow record")
            except (OSError, ValueError) as exc:
                log.error("bot flow store: %s unreadable, skipped: %s", path, exc)
                continue
            found.append(record)
        return found

    # -- the content last published from each source (file) -----------------------------
    def _sources(self) -> dict[str, str]:
        if self._files is None:
            try:
                loaded = json.loads((self.root / "files.json").read_bytes())
            except (OSError, ValueError):
                loaded = {}
            self._files = loaded if isinstance(loaded, dict) else {}
        return self._files

    async def seen(self, source: str) -> str | None:
        return self._sources().get(source)

    async def sources(self) -> dict[str, str]:
        return dict(self._sources())

    async def saw(self, source: str, sha: str) -> None:
        files = self._sources()
        if files.get(source) != sha:
            files[source] = sha
            write_atomic(self.root / "files.json", json.dumps(files, indent=1).encode("utf-8"))


# -- in storage: every process and node of an install ---------------------------------------
VERSION_KIND = "bot.flow_version"  # id: sha256, data: {"text"}
FLOW_KIND = "bot.flow"  # id: flow id, data: {"id", "active", "versions", "activations"}
SOURCES_KIND = "bot.flow_sources"  # id SOURCES_ID, data: {source: sha256}
SOURCES_ID = "files"
CAS_TRIES = 20


def merge_flow(stored: dict[str, Any] | None, ours: dict[str, Any]) -> dict[str, Any]:
    """One flow record from what storage holds and what this process would write: every
    version either knows (storage's order first), every activation (by time), and the
    version of the latest activation active. Two processes writing at once converge."""
    if not stored:
        return ours
    versions = list(stored.get("versions") or [])
    known = {v.get("sha256") for v in versions if isinstance(v, dict)}
    versions += [v for v in ours.get("versions") or [] if v.get("sha256") not in known]
    seen: set[tuple] = set()
    activations = []
    entries = [*(stored.get("activations") or []), *(ours.get("activations") or [])]
    for entry in sorted(entries, key=lambda e: float(e.get("at") or 0)):
        key = (entry.get("sha256"), entry.get("by"), entry.get("at"))
        if key not in seen:
            seen.add(key)
            activations.append(entry)
    activations = activations[-MAX_ACTIVATIONS:]
    active = (
        activations[-1]["sha256"] if activations else ours.get("active") or stored.get("active")
    )
    return {"id": ours["id"], "active": active, "versions": versions, "activations": activations}


class RecordFlowStore:
    """Flow versions as install-level storage records: shared by every process on that
    storage. Each write of a flow record is a compare-and-set that merges what another
    process wrote meanwhile (:func:`merge_flow`)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    async def has(self, sha: str) -> bool:
        return await self.read(sha) is not None

    async def save_version(self, sha: str, raw: bytes) -> bool:
        if hashlib.sha256(raw).hexdigest() != sha:
            raise ValueError("content does not match its sha256")
        data = {"text": raw.decode("utf-8")}
        try:
            await self.storage.put_record(INSTALL, VERSION_KIND, sha, data, expect_version=0)
        except VersionConflict:
            return False  # stored already (the same content: its name is its hash)
        return True

    async def read(self, sha: str) -> bytes | None:
        if not _SHA.fullmatch(sha):
            return None
        record = await self.storage.get_record(INSTALL, VERSION_KIND, sha)
        text = record.data.get("text") if record is not None else None
        if not isinstance(text, str):
            return None
        raw = text.encode("utf-8")
        if hashlib.sha256(raw).hexdigest() != sha:
            log.error("bot flow store: %s does not match its sha256; ignored", sha[:12])
            return None
        return raw

    async def save_flow(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write (merged with what is stored); returns what storage holds now."""
        for _ in range(CAS_TRIES):
            stored = await self.storage.get_record(INSTALL, FLOW_KIND, record["id"])
            merged = merge_flow(stored.data if stored else None, record)
            merged["activations"] = merged.get("activations", [])[-MAX_ACTIVATIONS:]
            try:
                await self.storage.put_record(
                    INSTALL, FLOW_KIND, record["id"], merged,
                    expect_version=stored.version if stored else 0,
                )  # fmt: skip
            except VersionConflict:
                continue  # another process wrote it meanwhile: merge with that
            return merged
        raise RuntimeError(f"bot flow {record['id']}: its record keeps changing")

    async def flow(self, flow_id: str) -> dict[str, Any] | None:
        record = await self.storage.get_record(INSTALL, FLOW_KIND, flow_id)
        return record.data if record is not None else None

    async def flows(self) -> list[dict[str, Any]]:
        found, after = [], ""
        while True:
            page = await self.storage.list_records(INSTALL, FLOW_KIND, after=after, limit=100)
            found += [r.data for r in page if isinstance(r.data.get("id"), str)]
            if len(page) < 100:
                return found
            after = page[-1].id

    async def sources(self) -> dict[str, str]:
        record = await self.storage.get_record(INSTALL, SOURCES_KIND, SOURCES_ID)
        return dict(record.data) if record is not None else {}

    async def seen(self, source: str) -> str | None:
        return (await self.sources()).get(source)

    async def saw(self, source: str, sha: str) -> None:
        for _ in range(CAS_TRIES):
            record = await self.storage.get_record(INSTALL, SOURCES_KIND, SOURCES_ID)
            files = dict(record.data) if record is not None else {}
            if files.get(source) == sha:
                return
            files[source] = sha
            try:
                await self.storage.put_record(
                    INSTALL, SOURCES_KIND, SOURCES_ID, files,
                    expect_version=record.version if record else 0,
                )  # fmt: skip
                return
            except VersionConflict:
                continue
        raise RuntimeError("bot flow sources: the record keeps changing")


async def import_folder(folder: FlowStore, records: RecordFlowStore) -> int:
    """Copy what an older kefu kept in ``<data_dir>/bot`` into the records, once (only
    when storage holds no flow yet); the folder is left as it was. Returns the flows
    copied."""
    if not folder.root.is_dir() or await records.flows():
        return 0
    copied = 0
    for record in await folder.flows():
        versions = []
        for meta in record.get("versions") or []:
            sha = meta.get("sha256") if isinstance(meta, dict) else None
            raw = await folder.read(sha) if sha else None
            if raw is not None:
                await records.save_version(sha, raw)
                versions.append(meta)
        kept = {v["sha256"] for v in versions}
        await records.save_flow(
            {
                "id": record["id"],
                "active": record.get("active") if record.get("active") in kept else None,
                "versions": versions,
                "activations": [
                    a for a in record.get("activations") or [] if a.get("sha256") in kept
                ],
            }
        )
        copied += 1
    for source, sha in (await folder.sources()).items():
        await records.saw(source, sha)
    if copied:
        log.info("bot flows: %d flow(s) copied from %s into storage", copied, folder.root)
    return copied
