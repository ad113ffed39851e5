"""A/B tests of reply variants: definitions, sticky assignment, and the statistics of a report.

A flow declares its experiments at the top level and uses them in replies
(``docs/bot.md``, "A/B tests")::

    experiments:
      welcome_offer:
        variants: {control: 50, coupon: 50}   # name: weight; the first one is the control
        convert_on: {track: purchase}         # or {event: TYPE}, {state: NAME},
                                              #    {resolved_without_handoff: true}
        allocation: hash                      # or thompson
    states:
      welcome:
        say:
          - experiment: welcome_offer
            variants:
              control: "Hello!"
              coupon: "Hello! WELCOME10 takes 10% off your first order."

**Assignment** (``allocation: hash``) is sticky and needs no storage: the visitor id and
the experiment id are hashed with BLAKE2b, the first 8 bytes as a number in [0, 1)
pick the variant whose cumulative weight range contains it. ``thompson`` draws from
each variant's Beta(1 + conversions, 1 + exposures - conversions) posterior and takes
the largest draw; that assignment is then kept (sticky once assigned).

Everything here is pure (no storage, no clock); :mod:`.abtests` records exposures
and conversions and builds reports from stored conversations.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: z for a two-sided 95% interval.
Z95 = 1.959963984540054
#: An SRM is flagged when the chi-square goodness-of-fit p-value is below this.
SRM_P = 0.001
ALLOCATIONS = ("hash", "thompson")
CONVERSION_KINDS = ("track", "event", "state", "resolved_without_handoff")
_NAME = r"[A-Za-z0-9_.:-]{1,64}"


@dataclass(frozen=True)
class Experiment:
    """An experiment of a flow: variants with weights (the first is the control)."""

    id: str
    variants: tuple[tuple[str, float], ...]
    convert_on: str  # "track:NAME" | "event:TYPE" | "state:NAME" | "resolved_without_handoff"
    allocation: str = "hash"
    line: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.variants)

    @property
    def control(self) -> str:
        return self.variants[0][0]

    def weights(self) -> dict[str, float]:
        return dict(self.variants)

    def assign(self, visitor_id: str) -> str:
        """The sticky variant of ``visitor_id`` by hash (whatever ``allocation`` says)."""
        return pick_by_weight(self.variants, bucket(self.id, visitor_id))


def bucket(experiment_id: str, visitor_id: str) -> float:
    """A deterministic number in [0, 1) for (experiment, visitor): BLAKE2b, first 8 bytes."""
    key = f"{experiment_id}\x00{visitor_id}".encode()
    digest = hashlib.blake2b(key, digest_size=8, person=b"kefu-ab").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def pick_by_weight(variants: Iterable[tuple[str, float]], u: float) -> str:
    """The variant whose cumulative weight range contains ``u`` (in [0, 1))."""
    variants = list(variants)
    total = sum(w for _, w in variants)
    edge = 0.0
    for name, weight in variants:
        edge += weight / total
        if u < edge:
            return name
    return variants[-1][0]  # u within rounding of 1.0


def thompson_draw(
    variants: Iterable[str], tallies: Mapping[str, tuple[int, int]], rng: random.Random
) -> str:
    """Thompson sampling: one draw from each Beta(1 + x, 1 + n - x); the largest wins."""
    best, best_draw = None, -1.0
    for name in variants:
        n, x = tallies.get(name, (0, 0))
        draw = rng.betavariate(1 + x, 1 + max(0, n - x))
        if draw > best_draw:
            best, best_draw = name, draw
    return best


# -- parsing (the flow's top-level ``experiments:``) ---------------------------------------


def parse_experiment(exp_id: Any, body: Any, line: int) -> tuple[Experiment | None, list[str]]:
    """One ``experiments:`` entry -> (experiment, problems as messages)."""
    import re

    where = f"experiment {exp_id!r}"
    if not isinstance(exp_id, str) or not re.fullmatch(_NAME, exp_id):
        return None, [f"{where}: an id of letters, digits, '_', '.', ':', '-' (at most 64)"]
    if not isinstance(body, Mapping):
        return None, [f"{where} must be a mapping with variants and convert_on"]
    problems = []
    unknown = set(body) - {"variants", "convert_on", "allocation"}
    if unknown:
        problems.append(
            f"{where}: unknown key {sorted(unknown)[0]!r} (expected allocation, convert_on, "
            "variants)"
        )
    raw = body.get("variants")
    variants: list[tuple[str, float]] = []
    if not isinstance(raw, Mapping) or len(raw) < 2:
        problems.append(f"{where}.variants: a mapping of at least two names to weights")
    else:
        for name, weight in raw.items():
            if not isinstance(name, str) or not re.fullmatch(_NAME, name):
                problems.append(f"{where}.variants: {name!r} is not a variant name")
            elif isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
                problems.append(f"{where}.variants.{name}: the weight must be a positive number")
            elif not math.isfinite(weight):
                problems.append(f"{where}.variants.{name}: the weight must be finite")
            else:
                variants.append((name, float(weight)))
    allocation = body.get("allocation", "hash")
    if allocation not in ALLOCATIONS:
        problems.append(f"{where}.allocation: one of {', '.join(ALLOCATIONS)}")
    convert_on = None
    conv = body.get("convert_on")
    if not isinstance(conv, Mapping) or len(conv) != 1:
        problems.append(
            f"{where}.convert_on: one of {{track: NAME}}, {{event: TYPE}}, {{state: NAME}}, "
            "{resolved_without_handoff: true}"
        )
    else:
        kind, value = next(iter(conv.items()))
        if kind not in CONVERSION_KINDS:
            problems.append(
                f"{where}.convert_on: unknown kind {kind!r} ({', '.join(CONVERSION_KINDS)})"
            )
        elif kind == "resolved_without_handoff":
            if value is not True:
                problems.append(f"{where}.convert_on: resolved_without_handoff: true")
            convert_on = kind
        elif not isinstance(value, str) or not re.fullmatch(_NAME, value):
            problems.append(f"{where}.convert_on.{kind}: a name (letters, digits, _ . : -)")
        else:
            convert_on = f"{kind}:{value}"
    if problems or convert_on is None:
        return None, problems
    return Experiment(exp_id, tuple(variants), convert_on, allocation, line), []


# -- statistics ----------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (0..1); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score interval (his method 10, from Wilson intervals).

    ``L = d - sqrt((p1 - l1)^2 + (u2 - p2)^2)``, ``U = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)``.
    """
    if n1 <= 0 or n2 <= 0:
        return 0.0, -1.0, 1.0
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lo), min(1.0, hi)


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series or continued fraction)."""
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for P(a, x)
        term = total = 1.0 / a
        k = a
        for _ in range(10_000):
            k += 1
            term *= x / k
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300  # Lentz's continued fraction for Q(a, x)
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def chi2_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for a chi-square distribution with ``df`` degrees of freedom."""
    return _gamma_q(df / 2.0, statistic / 2.0)


def srm_check(observed: Mapping[str, int], weights: Mapping[str, float]) -> dict[str, Any]:
    """Sample-ratio mismatch: chi-square goodness of fit of exposures against the weights."""
    names = list(weights)
    total_n = sum(observed.get(n, 0) for n in names)
    total_w = sum(weights.values())
    if total_n == 0 or len(names) < 2:
        return {"chi2": 0.0, "df": max(0, len(names) - 1), "p_value": 1.0, "flagged": False}
    chi2 = 0.0
    for name in names:
        expected = total_n * weights[name] / total_w
        chi2 += (observed.get(name, 0) - expected) ** 2 / expected
    df = len(names) - 1
    p = chi2_sf(chi2, df)
    return {"chi2": chi2, "df": df, "p_value": p, "flagged": p < SRM_P}


# -- the report of one experiment ----------------------------------------------------------


def build_report(experiment_id: str, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-variant figures from stored exposure records (``meta["bot_ab"][experiment_id]``).

    Weights, allocation and conversion come from the newest record (each exposure keeps
    the definition it was shown under); ``weights_changed`` says that older records
    were shown under other weights (then the SRM check is against the newest only).
    """
    records = [r for r in records if isinstance(r, Mapping) and r.get("variant")]
    newest = max(records, key=lambda r: r.get("exposed_at") or 0, default={})
    weights = {str(k): float(v) for k, v in (newest.get("weights") or {}).items()}
    for r in records:  # a variant seen but missing from the newest weights
        weights.setdefault(str(r["variant"]), 0.0)
    counts = {name: [0, 0] for name in weights}
    for r in records:
        entry = counts[str(r["variant"])]
        entry[0] += 1
        entry[1] += 1 if r.get("converted_at") else 0
    names = list(weights)
    control = names[0] if names else None
    total = sum(n for n, _ in counts.values())
    total_w = sum(weights.values()) or 1.0
    variants = []
    for name in names:
        n, x = counts[name]
        lo, hi = wilson(x, n)
        row: dict[str, Any] = {
            "name": name,
            "control": name == control,
            "weight": weights[name],
            "expected_share": weights[name] / total_w,
            "exposures": n,
            "share": n / total if total else 0.0,
            "conversions": x,
            "rate": x / n if n else 0.0,
            "rate_ci95": [lo, hi],
            "diff_vs_control": None,
            "diff_ci95": None,
        }
        if name != control and control is not None:
            cn, cx = counts[control]
            d, dlo, dhi = newcombe(x, n, cx, cn)
            if n and cn:
                row["diff_vs_control"], row["diff_ci95"] = d, [dlo, dhi]
        variants.append(row)
    allocation = newest.get("allocation", "hash")
    positive = {k: v for k, v in weights.items() if v > 0}
    srm = srm_check({k: counts[k][0] for k in positive}, positive)
    srm["applicable"] = allocation == "hash"
    if not srm["applicable"]:
        srm["flagged"] = False  # adaptive allocation is meant to depart from the weights
    srm["threshold"] = SRM_P
    changed = any(
        {str(k): float(v) for k, v in (r.get("weights") or {}).items()} != weights for r in records
    )
    return {
        "experiment": experiment_id,
        "allocation": allocation,
        "convert_on": newest.get("convert_on"),
        "control": control,
        "exposures": total,
        "conversions": sum(x for _, x in counts.values()),
        "variants": variants,
        "srm": srm,
        "weights_changed": changed,
    }


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a table for ``kefu bot ab-report``."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    lines = [
        f"experiment {report['experiment']} ({report['allocation']}; converts on "
        f"{report['convert_on']}): {report['exposures']} exposures, "
        f"{report['conversions']} conversions",
        f"{'variant':<16} {'weight':>7} {'exposed':>8} {'share':>7} {'conv':>6} {'rate':>7} "
        f"{'95% CI':>17}  {'diff vs control (95% CI)':>28}",
    ]
    for v in report["variants"]:
        ci = f"[{pct(v['rate_ci95'][0])}, {pct(v['rate_ci95'][1])}]"
        if v["control"]:
            diff = "(control)"
        elif v["diff_vs_control"] is None:
            diff = "-"
        else:
            lo, hi = v["diff_ci95"]
            diff = f"{100 * v['diff_vs_control']:+.2f} pt [{100 * lo:+.2f}, {100 * hi:+.2f}]"
        lines.append(
            f"{v['name']:<16} {pct(v['expected_share']):>7} {v['exposures']:>8} "
            f"{pct(v['share']):>7} {v['conversions']:>6} {pct(v['rate']):>7} {ci:>17}  "
            f"{diff:>28}"
        )
    srm = report["srm"]
    if not srm["applicable"]:
        lines.append("sample-ratio check: not applicable (adaptive allocation)")
    else:
        verdict = "MISMATCH" if srm["flagged"] else "ok"
        lines.append(
            f"sample-ratio check: chi2={srm['chi2']:.2f} df={srm['df']} "
            f"p={srm['p_value']:.3g} -> {verdict} (flagged below p={srm['threshold']})"
        )
    if report.get("weights_changed"):
        lines.append("note: some exposures were shown under other weights")
    return "\n".join(lines)
