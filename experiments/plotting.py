"""One place for how charts look and are written: every chart module draws through this one.

* the Agg backend, set once here (charts are files; no display needed, also on servers);
* the house style (:data:`STYLE`: grid, fonts, no top/right frame), applied on import;
* percent axes (:func:`percent_axis`) for rates kept as fractions in the data;
* 95 % bands and error bars with :data:`sim.metrics.Z95` (:func:`band`);
* :func:`finish` (title, labels, grid, legend, save) and :func:`save` (atomic PNG write, close).

Import ``plt`` from here rather than ``matplotlib.pyplot`` so that the backend is set first.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.layout_engine import PlaceHolderLayoutEngine  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from sim.metrics import Z95  # noqa: E402
from sim.outputs import atomic_savefig  # noqa: E402

#: Resolution of every chart (pixels per inch).
DPI = 110
#: The house style (matplotlib rcParams).
STYLE = {"grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
         "legend.fontsize": 9, "legend.title_fontsize": 9, "savefig.dpi": DPI}
plt.rcParams.update(STYLE)

__all__ = ["DPI", "STYLE", "Z95", "band", "finish", "percent_axis", "percent_formatter", "plt", "save", "time_line"]


def percent_formatter(digits: int | None = None) -> FuncFormatter:
    """Tick labels of fractions as percentages: 0.0162 -> '1.62%' (3 significant digits by default)."""
    if digits is None:
        return FuncFormatter(lambda v, _: f"{100 * v:.3g}%")
    return FuncFormatter(lambda v, _: f"{100 * v:.{digits}f}%")


def percent_axis(ax, axis: str = "y", digits: int | None = None) -> None:
    """Show the ``axis`` ("x", "y" or "both") of ``ax`` in percent; the data stay fractions."""
    for a in ("x", "y") if axis == "both" else (axis,):
        getattr(ax, f"{a}axis").set_major_formatter(percent_formatter(digits))


def band(ax, x, mean, se, color, alpha: float = 0.2) -> None:
    """Shade the 95 % normal band ``mean +- Z95 * se`` (arrays of the same shape; NaN se: no band)."""
    mean, se = np.asarray(mean, float), np.asarray(se, float)
    ax.fill_between(x, mean - Z95 * se, mean + Z95 * se, color=color, alpha=alpha, lw=0)


def time_line(ax, days, values, se, label: str):
    """One cell's series over time (arrays of the same shape) with its 95 % band (``se`` None: no
    band); dots on short series, so a run of one or a few bins still shows its values."""
    line, = ax.plot(days, values, label=label, lw=1.8, marker="o" if np.size(days) <= 16 else None, ms=3)
    if se is not None:
        band(ax, days, values, se, line.get_color())
    return line


def save(fig, path: Path | str, dpi: int = DPI, **kwargs) -> Path:
    """Write ``fig`` to ``path`` atomically (no truncated PNG if the run is killed) and close it."""
    path = Path(path)
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        # tight_layout() leaves a placeholder layout engine behind, and with any engine savefig
        # lays the whole figure out once more before drawing it: a third of the save's time for
        # nothing, the layout is done. Without the engine the PNG is the same, byte for byte.
        fig.set_layout_engine(None)
    atomic_savefig(fig, path, dpi=dpi, **kwargs)
    plt.close(fig)
    return path


def finish(fig, ax, path: Path, *, title: str, xlabel: str, ylabel: str, legend_title: str | None,
           grid_axis: str = "both", **legend_kw) -> Path:
    """Title, axis labels, grid and legend on ``ax``; save ``fig`` to ``path`` and close it."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis=grid_axis)
    ax.legend(title=legend_title, **legend_kw)
    fig.tight_layout()
    return save(fig, path)
