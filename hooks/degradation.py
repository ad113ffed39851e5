"""Degradation hooks: shed optional features under pressure, restore them after."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kefu.hooks import MaybeAwaitable, hookspec

if TYPE_CHECKING:
    from kefu.core.kernel import Kernel
    from kefu.core.types import DegradableFeature, PressureReading


@hookspec
def kefu_degradation_features(kernel: Kernel) -> list[DegradableFeature] | None:
    """Declare features that may be shed under load.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.DegradableFeature` (name,
        priority: lower is shed first, and ``set_enabled(bool)``), or None. Sync only.
    """


@hookspec
def kefu_degradation_pressure(kernel: Kernel) -> MaybeAwaitable[list[PressureReading] | None]:
    """Report current pressure readings.

    Called periodically by the degradation controller.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.PressureReading` (source name
        and a value in 0..1), or None. May be async.
    """


@hookspec
def kefu_degradation_level_changed(kernel: Kernel, old: int, new: int) -> MaybeAwaitable[None]:
    """Observe a change of the overall pressure level.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param old: the previous level (0 = normal).
    :param new: the new level.
    :returns: None. May be async; implementations are isolated from each other.
    """
