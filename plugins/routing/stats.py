"""Per-agent routing statistics kept by the process: what the weight factors read.

Moving averages of first-response time and satisfaction, the last assignment
time and the "accepting chats" switch. The live source fills them from domain
events; the simulator feeds the same class, so both see identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from kefu.plugins.routing.snapshots import AgentSnapshot


@dataclass(slots=True)
class AgentRecord:
    last_assigned_at: float | None = None
    first_response_s: float | None = None
    satisfaction: float | None = None
    accepting: bool = True


class AgentStats:
    """Statistics by ``(site_id, agent_id)``; ``alpha`` is the moving averages' weight of news."""

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be within (0, 1]")
        self.alpha = alpha
        self._records: dict[tuple[str, str], AgentRecord] = {}

    def record(self, site_id: str, agent_id: str) -> AgentRecord:
        found = self._records.get((site_id, agent_id))
        if found is None:
            found = self._records[site_id, agent_id] = AgentRecord()
        return found

    def _average(self, old: float | None, value: float) -> float:
        return value if old is None else old + self.alpha * (value - old)

    def assigned(self, site_id: str, agent_id: str, ts: float) -> None:
        self.record(site_id, agent_id).last_assigned_at = ts

    def responded(self, site_id: str, agent_id: str, seconds: float) -> None:
        """One observed time from assignment to the agent's first reply."""
        record = self.record(site_id, agent_id)
        record.first_response_s = self._average(record.first_response_s, max(seconds, 0.0))

    def rated(self, site_id: str, agent_id: str, score: float) -> None:
        """One satisfaction rating, normalised to 0..1."""
        if not 0 <= score <= 1:
            raise ValueError(f"a satisfaction score must be within 0..1, got {score!r}")
        record = self.record(site_id, agent_id)
        record.satisfaction = self._average(record.satisfaction, score)

    def set_accepting(self, site_id: str, agent_id: str, accepting: bool) -> None:
        self.record(site_id, agent_id).accepting = bool(accepting)

    def fill(self, agent: AgentSnapshot) -> AgentSnapshot:
        """Copy the statistics into a snapshot (fields this process knows nothing of stay)."""
        record = self._records.get((agent.site_id, agent.id))
        if record is not None:
            agent.last_assigned_at = record.last_assigned_at
            agent.first_response_s = record.first_response_s
            agent.satisfaction = record.satisfaction
            agent.accepting = agent.accepting and record.accepting
        return agent
