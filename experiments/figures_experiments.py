"""README figures of experiments and their analyses: incrementality, the Netflix replay, feedback and
clickbait loops, homogenization, pipeline faults, sessions against published figures
(sources for ``make figures``: see :mod:`experiments.figures`)."""
from __future__ import annotations
