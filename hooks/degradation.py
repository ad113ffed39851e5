"""Degradation hooks: shed optional features under pressure, restore them after."""

from kefu.hooks import hookspec


@hookspec
def kefu_degradation_features(kernel):
    """Declare features that may be shed under load.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.DegradableFeature` (name,
        priority: lower is shed first, and ``set_enabled(bool)``), or None. Sync only.
    """


@hookspec
def kefu_degradation_pressure(kernel):
    """Report current pressure readings.

    Called periodically by the degradation controller.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.PressureReading` (source name
        and a value in 0..1), or None. May be async.
    """


@hookspec
def kefu_degradation_level_changed(kernel, old, new):
    """Observe a change of the overall pressure level.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param old: the previous level (0 = normal).
    :param new: the new level.
    :returns: None. May be async; implementations are isolated from each other.
    """
