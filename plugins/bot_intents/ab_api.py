"""Admin REST endpoints of the bot's A/B tests: the experiments of a site and their reports.

Admins (``sites.manage``) see only their own site's conversations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint
from kefu.plugins.bot_intents.api import admin_service

EXPERIMENT_ID = r"[A-Za-z0-9_.:-]{1,64}"


class ExperimentSummary(BaseModel):
    id: str
    exposures: int
    flows: list[str] = Field(description="Active flows that declare it.")


class ExperimentList(BaseModel):
    experiments: list[ExperimentSummary]


class VariantReport(BaseModel):
    name: str
    control: bool
    weight: float
    expected_share: float = Field(description="weight / sum of weights")
    exposures: int
    share: float = Field(description="exposures / all exposures")
    conversions: int
    rate: float = Field(description="conversions / exposures")
    rate_ci95: list[float] = Field(description="95% Wilson score interval of the rate")
    diff_vs_control: float | None = Field(description="rate - the control's rate")
    diff_ci95: list[float] | None = Field(description="95% Newcombe hybrid score interval")


class SrmCheck(BaseModel):
    chi2: float
    df: int
    p_value: float
    flagged: bool = Field(description="p_value < threshold: the split is not the weights'")
    threshold: float
    applicable: bool = Field(description="false for thompson allocation")


class ExperimentReport(BaseModel):
    experiment: str
    site_id: str
    allocation: str
    convert_on: str | None
    control: str | None
    exposures: int
    conversions: int
    variants: list[VariantReport]
    srm: SrmCheck
    weights_changed: bool
    conversations_scanned: int


class ReportQuery(BaseModel):
    since: float | None = Field(None, description="Only exposures at or after (Unix seconds).")


def make_ab_endpoints(service_of: Callable[[Any], Any]) -> list[RestEndpoint]:
    async def service(call: Any) -> Any:
        return await admin_service(call, service_of)

    async def list_experiments(call: Any) -> ExperimentList:
        svc = await service(call)
        seen = await svc.ab.experiments(call.site_id)
        declared: dict[str, list[str]] = {}
        for sha in svc.registry.active.values():
            flow = svc.registry.get(sha)
            if flow is not None and flow.spec.serves(call.site_id):
                for exp_id in flow.spec.experiments:
                    declared.setdefault(exp_id, []).append(flow.id)
        ids = sorted(set(seen) | set(declared))
        return ExperimentList(
            experiments=[
                ExperimentSummary(id=i, exposures=seen.get(i, 0), flows=declared.get(i, []))
                for i in ids
            ]
        )

    async def report(call: Any) -> ExperimentReport:
        svc = await service(call)
        since = call.query.since if call.query is not None else None
        found = await svc.ab.report(call.site_id, call.params["experiment_id"], since)
        if found is None:
            raise ApiError(404, "not_found", "nobody of your site was exposed to it")
        return ExperimentReport(**found)

    base = "/v1/bot/experiments"
    return [
        RestEndpoint(
            "GET", base, "list_bot_experiments", "A/B experiments of the site", "bot",
            list_experiments, response=ExperimentList, errors=(503,),
            description="Experiments declared by active flows or seen in the site's "
            "conversations, with their exposures.",
        ),
        RestEndpoint(
            "GET", f"{base}/{{experiment_id}}/report", "bot_experiment_report",
            "Report of an A/B experiment", "bot", report, response=ExperimentReport,
            query=ReportQuery, errors=(404, 503),
            path_patterns={"experiment_id": EXPERIMENT_ID},
            description="Per variant: exposures, conversions, rate with its 95% Wilson "
            "interval, difference with the control and its 95% Newcombe interval; a "
            "sample-ratio-mismatch check (chi-square against the weights, flagged below "
            "p = 0.001). Reads every conversation of the site (docs/bot.md, A/B tests).",
        ),
    ]  # fmt: skip
