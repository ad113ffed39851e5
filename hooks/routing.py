"""Routing hooks: named policies, eligibility filters and weight factors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kefu.hooks import hookspec

if TYPE_CHECKING:
    from kefu.core.kernel import Kernel
    from kefu.core.types import RoutingFilter, WeightFactor


@hookspec
def kefu_routing_policies() -> dict[str, Callable[[Kernel], object]] | None:
    """Register routing policies (selectors) by name.

    Called once at start-up. ``[routing] policy = "NAME"`` chooses one; an
    unknown name fails start-up with the list of names available.

    :returns: a dict mapping a policy name (``"weighted"``, ``"round_robin"``,
        ...) to a factory ``factory(kernel) -> policy``, or None. Sync only.
    """


@hookspec
def kefu_routing_filters(kernel: Kernel) -> list[RoutingFilter] | None:
    """Contribute eligibility filters applied before any policy selects.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.RoutingFilter`; an agent is
        eligible only if every filter accepts it. None for no filter. Sync only.
    """


@hookspec
def kefu_routing_weight_factors(kernel: Kernel) -> list[WeightFactor] | None:
    """Contribute weight factors to the ``weighted`` policy's score.

    Any plugin may add a factor (for example satisfaction scores from an
    analytics plugin). The weight of each factor is read from the config
    (``[routing.weights]``), defaulting to the factor's own default.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.WeightFactor`, or None. Sync only.
    """
