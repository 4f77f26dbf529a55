"""``engine.faults``: the production pipeline's faults and the repairs a real pipeline uses.

Every rate is 0 and every repair off by default: the pipeline is then perfect and draws nothing
(:attr:`FaultsConfig.active` is False), so default runs are byte-identical to runs without this
package. Only :mod:`sim.schema` is imported here, so :mod:`sim.config` can embed the section.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from sim.schema import check_fields, param

#: The fault rates (shares in [0, 1]), in the order of the experiment and the tables.
FAULT_NAMES = ("unrendered", "unlogged", "event_loss", "duplicate", "late", "clock_skew",
               "misattribution", "out_of_order", "fallback")
#: The repairs (switches) and the fault each one is meant to remove.
REPAIR_OF = {"unrendered": "require_render", "duplicate": "dedup", "clock_skew": "join_by_id",
             "misattribution": "join_by_id", "fallback": "rendered_propensity"}
REPAIR_NAMES = ("dedup", "join_by_id", "rendered_propensity", "require_render")


@dataclass(frozen=True)
class FaultsConfig:
    """Faults of the log and event pipeline (rates) and the repairs that undo some of them."""

    unrendered: float = param(0.0, ge=0, le=1, doc="share of impressions logged but never rendered (an extra "
                                                       "log row the member never saw)")
    unlogged: float = param(0.0, ge=0, le=1, doc="share of rendered impressions never logged")
    event_loss: float = param(0.0, ge=0, le=1, doc="share of client events (click, play, quality) lost")
    duplicate: float = param(0.0, ge=0, le=1, doc="share of client events sent twice")
    late: float = param(0.0, ge=0, le=1, doc="share of client events with a heavy-tailed extra delay")
    late_scale_minutes: float = param(60.0, gt=0, le=1e7, doc="scale of the extra delay (Lomax)")
    late_tail: float = param(1.5, gt=0, le=100, doc="tail index of the extra delay (smaller: heavier tail)")
    clock_skew: float = param(0.0, ge=0, le=1, doc="share of devices whose clock is off")
    clock_skew_minutes: float = param(180.0, gt=0, le=1e7, doc="how far a skewed device clock is off (either sign)")
    misattribution: float = param(0.0, ge=0, le=1, doc="share of plays credited to the wrong impression "
                                                         "(see misattribution_to)")
    misattribution_to: str = param("tile", choices=("tile", "previous_image"),
                                   doc="where a misattributed play is credited: tile = another impression of "
                                       "the visit (the tile before it); previous_image = the image the member "
                                       "saw at their previous impression of the title")
    out_of_order: float = param(0.0, ge=0, le=1, doc="share of log batches reaching the trainers one retrain "
                                                       "late, after later batches")
    fallback: float = param(0.0, ge=0, le=1, doc="personalization timeout rate: the title's default image "
                                                   "is served instead of the policy's")
    fallback_logged_as_policy: bool = param(False, doc="the bug: a fallback is logged as if the policy had "
                                                       "chosen the default image (its propensity, no flag)")
    dedup: bool = param(False, doc="repair: de-duplicate client events by event id")
    join_by_id: bool = param(False, doc="repair: join outcomes to impressions by impression id, attribution "
                                        "window on the device's own clock")
    rendered_propensity: bool = param(False, doc="repair: log the propensity of the image rendered "
                                                 "(policy and fallback mixed)")
    require_render: bool = param(False, doc="repair: discard impressions without a render confirmation")

    def __post_init__(self) -> None:
        check_fields(self, "")

    @property
    def active(self) -> bool:
        """Any fault or repair on: the pipeline stage runs and the log gets its columns."""
        return any(getattr(self, f.name) for f in fields(self) if f.name in FAULT_NAMES + REPAIR_NAMES)

    @property
    def tracks_previous_image(self) -> bool:
        """Plays are misattributed to the previous image: the shard must remember shown images."""
        return bool(self.misattribution) and self.misattribution_to == "previous_image"
