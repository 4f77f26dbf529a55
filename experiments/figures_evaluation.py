"""README figures of offline evaluation, real data and speed: OPE accuracy, page-level OPE, MovieLens,
calibration, fitting, the bench, scale and memory
(sources for ``make figures``: see :mod:`experiments.figures`)."""
from __future__ import annotations
