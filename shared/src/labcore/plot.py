"""The two pictures benches and demos draw: curves (log-log for scaling) and bars with spread.

matplotlib is an optional dependency (``labcore[plot]``; each package that plots lists it): it is
imported when a plot is drawn, with the non-interactive Agg backend, so nothing here needs a
display. Files are written atomically (``.tmp`` then rename) and only on rank 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["bar_plot", "line_plot"]


def _figure():
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - the extra is missing
        from labcore.cli import UserError

        raise UserError("plots need matplotlib: pip install 'labcore[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6.0, 4.0), dpi=110)


def _save(plt, fig, path: str | Path) -> Path | None:
    from labcore import dist

    path = Path(path)
    if not dist.is_main():
        plt.close(fig)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def line_plot(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    loglog: bool = False,
) -> Path | None:
    """One line with markers per ``name -> (x, y)``; ``loglog`` for scaling curves.

    Returns the written path (``None`` on ranks > 0).
    """
    plt, fig, ax = _figure()
    for name, (x, y) in series.items():
        ax.plot(list(x), list(y), marker="o", label=name)
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend()
    return _save(plt, fig, path)


def bar_plot(
    path: str | Path,
    values: Mapping[str, tuple[float, float]],
    *,
    ylabel: str,
    title: str = "",
) -> Path | None:
    """One bar per ``name -> (mean, std)``, the std drawn as an error bar (seed spread)."""
    plt, fig, ax = _figure()
    names = list(values)
    means = [values[n][0] for n in names]
    stds = [values[n][1] for n in names]
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(plt, fig, path)
