"""Pressure self-sensing and graceful degradation (issue 16; docs/degradation.md).

Each worker samples its own pressure every ``[degradation] interval_s`` (event-loop lag,
the storage group commit's CoDel sojourn, batch latencies against their own minimum,
slow consumers, CPU, memory, file descriptors, GC time, handshake and session rates,
and whatever other plugins report through ``kefu_degradation_pressure``), chooses a
level 0..3 with hysteresis (:mod:`~kefu.plugins.degradation.levels`) and sheds what
the features declared through ``kefu_degradation_features`` (lowest priority first),
and refuses new sessions politely (:mod:`~kefu.plugins.degradation.admission`). The
level is ``kernel.pressure.level`` for hot paths. Persistence, acks and delivery to
connected participants are never shed.
"""

from __future__ import annotations

from kefu.core.pressure import MAX_LEVEL, STEADY
from kefu.core.stats import labelled
from kefu.hooks import hookimpl
from kefu.plugins.degradation.admission import make_middleware
from kefu.plugins.degradation.api import cli_command, make_endpoints
from kefu.plugins.degradation.controller import Controller
from kefu.plugins.degradation.settings import DegradationSettings

STATE = "degradation"


def _controller(kernel) -> Controller:
    return kernel.plugin_state(STATE, Controller)


@hookimpl
def kefu_config_schema():
    return {"degradation": DegradationSettings}


@hookimpl
def kefu_middlewares(kernel):
    # inside CORS (10), so that a refusal still carries the widget's CORS headers
    return [(15, make_middleware(_controller(kernel)))]


@hookimpl(trylast=True)
async def kefu_startup(kernel):
    controller = _controller(kernel)
    controller.start()
    kernel.pressure = controller


@hookimpl
async def kefu_shutdown(kernel):
    controller = kernel.drop_plugin_state(STATE)
    if controller is not None:
        kernel.pressure = STEADY
        await controller.stop()


@hookimpl
def kefu_config_changed(kernel, section, old, new):
    controller = kernel.existing_plugin_state(STATE)
    if section == "degradation" and controller is not None:
        controller.reconfigure()


@hookimpl
def kefu_rest_endpoints(kernel):
    return make_endpoints()


@hookimpl
def kefu_cli_commands():
    return [cli_command()]


@hookimpl
def kefu_stats(kernel):
    controller = kernel.existing_plugin_state(STATE)
    if controller is None:
        return None
    return {
        "degradation_level": controller.level,
        "degradation_sensed_level": controller.hysteresis.level,
        "degradation_sensor": labelled("sensor", controller.readings),
        "degradation_level_changes_total": controller.changes,
        "degradation_shed_total": labelled("feature", dict(controller.shed_total)),
        "degradation_feature_shed": labelled(
            "feature", {f.name: int(f.name in controller.shed) for f in controller.features}
        ),
        "degradation_refused_total": labelled("path", dict(controller.refused)),
        "degradation_rate_limited_total": labelled("path", dict(controller.rate_limited)),
        "degradation_closed_slow_consumers_total": controller.closed_slow,
        "degradation_level_seconds_total": labelled(
            "level", {str(i): controller.time_at[i] for i in range(MAX_LEVEL + 1)}
        ),
        "degradation_sampler_cpu_seconds_total": controller.sensors.cost_s,
    }
