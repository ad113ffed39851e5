"""Reports: conversations per day and hour, first-response and resolution times (median,
p90), CSAT, per agent and per department, bot containment, as JSON (``GET /v1/reports``)
and CSV (``GET /v1/reports/{table}.csv``). Computed on request from the storage's
conversation facts (:class:`kefu.core.reports.Reportable`); read by supervisors and
admins (action ``reports.read``). The page is the web plugin's ``/admin/reports``.
Settings ``[reports]``; docs/ui.md, "Reports"; docs/api.md, "Reports".
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kefu.hooks import hookimpl

from .api import endpoints


class ReportsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Most conversations one report reads (newest left out past it, ``truncated``).
    max_conversations: int = Field(100_000, ge=1, le=10_000_000)


@hookimpl
def kefu_config_schema():
    return {"reports": ReportsSettings}


@hookimpl
def kefu_rest_endpoints(kernel):
    return endpoints()
