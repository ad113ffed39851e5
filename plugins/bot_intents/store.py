"""Flow versions on disk, so that they and the active choice survive a restart.

Layout under ``<data_dir>/bot/``::

    versions/<sha256>.yaml   the exact content of every accepted version (stored once)
    flows/<flow id>.json     {"id", "active", "versions": [...], "activations": [...]}
    files.json               {source: sha256}: the content last published from each file

Every write is atomic (a temporary file in the same folder, fsync, ``os.replace``), so a
crash leaves the old or the new file, never half of one. A version file is checked
against its name when read; one that does not match is treated as missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

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
    def has(self, sha: str) -> bool:
        return _SHA.fullmatch(sha) is not None and self._version_path(sha).is_file()

    def save_version(self, sha: str, raw: bytes) -> bool:
        """Store a version's content once; False when it was stored already."""
        path = self._version_path(sha)
        if path.is_file():
            return False
        if hashlib.sha256(raw).hexdigest() != sha:
            raise ValueError("content does not match its sha256")
        write_atomic(path, raw)
        return True

    def read(self, sha: str) -> bytes | None:
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
    def save_flow(self, record: dict[str, Any]) -> None:
        record = {**record, "activations": record.get("activations", [])[-MAX_ACTIVATIONS:]}
        data = json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8")
        write_atomic(self.root / "flows" / f"{record['id']}.json", data)

    def flows(self) -> list[dict[str, Any]]:
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

    def seen(self, source: str) -> str | None:
        return self._sources().get(source)

    def saw(self, source: str, sha: str) -> None:
        files = self._sources()
        if files.get(source) != sha:
            files[source] = sha
            write_atomic(self.root / "files.json", json.dumps(files, indent=1).encode("utf-8"))
