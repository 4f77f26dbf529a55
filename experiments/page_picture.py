"""The homepage as two members with different tastes see it: same titles, personalised images.

Built from a run's impression log (no re-simulation): in one cell (the oracle's when the run has
one, else the policy under test), among the largest pages served in the last quarter of the run,
pick two visits of members whose strongest true taste genres differ and whose pages share the
most titles (and, among those, the most titles shown with different images). The picture shows
the shared titles in the rows of the first member's page, once per member, each tile coloured
by the dominant genre of the image's theme, so that personalisation is visible at a glance.

The world (catalog themes, member tastes) is rebuilt from the run's config and seed, which gives
identical arrays; tastes are ground truth, read here only to label the picture.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch, Rectangle

from experiments.plotting import plt, save
from experiments.results import read_log
from sim.config import experiment_config_from_dict
from sim.world import World, build_world
from sim.world.members import block_members

#: Display names for genre indices 0..15 (the simulator's genres are anonymous; these labels only
#: make the picture readable and are ordered like the genres' Zipf popularity).
GENRE_LABELS = ("drama", "comedy", "action", "thriller", "romance", "documentary", "kids", "crime",
                "sci-fi", "horror", "anime", "reality", "fantasy", "musical", "western", "sports")
MAX_ROWS, MAX_COLUMNS = 4, 7
CANDIDATE_VISITS = 300


def genre_label(g: int) -> str:
    return GENRE_LABELS[g] if g < len(GENRE_LABELS) else f"genre {g}"


@dataclass
class PagePair:
    cell: str
    members: tuple[int, int]
    visits: tuple[int, int]
    times: tuple[float, float]
    grid: list[list[int]]                 # rows of shared titles, in member A's page order
    row_labels: list[str]
    artwork: tuple[dict, dict]            # title -> artwork shown to each member


def choose_cell(metrics: dict, config: dict, requested: str | None = None) -> str | None:
    cells = list(metrics["cells"])
    if requested is not None:
        return requested if requested in cells else None
    if "oracle" in cells:
        return "oracle"
    policy = (config.get("policy") or {}).get("name")
    return policy if policy in cells else cells[-1]


def find_page_pair(run_dir: Path, world: World, cell: str, members: range | None = None) -> PagePair | None:
    """Two visits of the cell to show side by side (None if the log has too little), of
    ``members`` only (None: any member; ``world`` must hold their tastes)."""
    log = read_log(run_dir, ["time", "visit", "member", "title", "artwork", "row", "column"])
    if log is None or cell not in log[1]:
        return None
    data, names = log
    keep = data.pop("cell") == names.index(cell)
    if members is not None:
        keep &= (data["member"] >= members.start) & (data["member"] < members.stop)
    col = {k: v[keep] for k, v in data.items()}
    if col["time"].size == 0:
        return None
    late = col["time"] >= 0.75 * col["time"].max()
    col = {k: v[late] for k, v in col.items()}
    visits, counts = np.unique(col["visit"], return_counts=True)
    top = visits[np.argsort(-counts, kind="stable")[:CANDIDATE_VISITS]]
    order = np.argsort(col["visit"], kind="stable")
    starts = np.searchsorted(col["visit"][order], top)
    pages = []
    for v, s in zip(top, starts):
        idx = order[s:s + int(counts[np.searchsorted(visits, v)])]
        pages.append((int(v), int(col["member"][idx[0]]), float(col["time"][idx[0]]),
                      dict(zip(col["title"][idx].tolist(), col["artwork"][idx].tolist())),
                      col["title"][idx], col["row"][idx], col["column"][idx]))
    shown = np.array([page[1] for page in pages], np.int64)     # the pages' members: their tastes only
    dominant = dict(zip(shown.tolist(), world.response.tastes[shown].argmax(axis=1).tolist()))
    best, best_score = None, (-1, -1)
    for i, a in enumerate(pages):
        for b in pages[i + 1:]:
            if a[1] == b[1] or dominant[a[1]] == dominant[b[1]]:
                continue
            shared = a[3].keys() & b[3].keys()
            score = (len(shared), sum(a[3][t] != b[3][t] for t in shared))
            if score > best_score:
                best, best_score = (a, b), score
    if best is None or best_score[0] < 3:
        return None
    a, b = best
    shared = a[3].keys() & b[3].keys()
    by_row: dict[int, list[tuple[int, int]]] = {}
    for t, r, c in zip(a[4].tolist(), a[5].tolist(), a[6].tolist()):
        if t in shared:
            by_row.setdefault(r, []).append((c, t))
    # Rows with the most shared titles whose images differ come first; keep page order within.
    differ = lambda r: sum(a[3][t] != b[3][t] for _, t in by_row[r])  # noqa: E731
    rows = sorted(sorted(by_row, key=lambda r: (-differ(r), -len(by_row[r])))[:MAX_ROWS])
    grid = [[t for _, t in sorted(by_row[r])][:MAX_COLUMNS] for r in rows]
    prim = world.catalog.primary_genre
    row_labels = ["top picks" if r == 0 else
                  f"{genre_label(int(np.bincount(prim[[t for _, t in by_row[r]]]).argmax()))} row"
                  for r in rows]
    return PagePair(cell, (a[1], b[1]), (a[0], b[0]), (a[2], b[2]), grid, row_labels, (a[3], b[3]))


def draw_page_pair(pair: PagePair, world: World, path: Path) -> Path:
    cat = world.catalog
    theme_genre = cat.artwork_theme.argmax(axis=1)
    cmap = plt.get_cmap("tab20")
    colour = lambda g: cmap(g % 20)  # noqa: E731
    n_rows = len(pair.grid)
    n_cols = max(len(r) for r in pair.grid)
    fig, axes = plt.subplots(2, 1, figsize=(2.0 * n_cols + 2.6, 2 * (1.25 * n_rows + 0.8) + 1.2))
    used = set()
    for p, ax in enumerate(axes):
        member, shown = pair.members[p], pair.artwork[p]
        other = pair.artwork[1 - p]
        taste = world.response.tastes[member]
        top2 = np.argsort(-taste)[:2]
        likes = ", ".join(f"{genre_label(int(g))} {taste[g]:.0%}" for g in top2)
        ax.set_title(f"member {member} (true taste: {likes}) -- visit on day {pair.times[p] / 1440:.1f}",
                     fontsize=11, loc="left")
        for i, row in enumerate(pair.grid):
            y = n_rows - 1 - i
            ax.text(-0.08, y + 0.45, pair.row_labels[i], ha="right", va="center", fontsize=9)
            for j, title in enumerate(row):
                art = shown[title]
                g = int(theme_genre[art])
                used.add(g)
                differs = art != other[title]
                ax.add_patch(Rectangle((j + 0.04, y + 0.06), 0.92, 0.82, facecolor=colour(g),
                                       edgecolor="black", lw=2.2 if differs else 0.6))
                slot, size = int(cat.artwork_slot[art]) + 1, int(cat.pool_size[title])
                ax.text(j + 0.5, y + 0.47,
                        f"title {title}\nimage {slot} of {size}\n{genre_label(g)}",
                        ha="center", va="center", fontsize=8.5, linespacing=1.25)
        ax.set_xlim(-1.6, n_cols)
        ax.set_ylim(-0.05, n_rows)
        ax.axis("off")
    handles = [Patch(facecolor=colour(g), edgecolor="black", label=genre_label(g)) for g in sorted(used)]
    handles.append(Patch(facecolor="white", edgecolor="black", lw=2.2,
                         label="thick border: the two members see different images"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=9,
               title="tile colour: dominant genre of the image's theme", title_fontsize=9,
               frameon=False)
    fig.suptitle(f"The same titles on two members' homepages, cell '{pair.cell}': "
                 "each tile is the image the artwork policy chose for that member",
                 fontsize=12, y=0.995)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return save(fig, path)


def plot_homepage_picture(run_dir: Path | str, path: Path | str, cell: str | None = None) -> Path | None:
    """Write the picture to ``path``; None when the run has no logs or no suitable pair of pages."""
    run_dir, path = Path(run_dir), Path(path)
    if not any((run_dir / "logs").glob("part-*.parquet")):
        return None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cell = choose_cell(metrics, metrics.get("config", {}), cell)
    if cell is None:
        return None
    cfg = experiment_config_from_dict(metrics["config"])
    # The members of the first block only (all of a world of one block): drawing one block is
    # cheap, drawing every member of a 10M-member world is not (sim.world.build_world).
    block = block_members(range(1), cfg.engine.member_block, cfg.world.n_members)
    world = build_world(cfg.world, cfg.seed, cfg.engine.days * 1440.0, cfg.engine.member_block, blocks=range(1))
    pair = find_page_pair(run_dir, world, cell, block)
    return None if pair is None else draw_page_pair(pair, world, path)
