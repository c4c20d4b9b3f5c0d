"""labcore.plot writes real PNGs (checked by their signature and size), atomically."""

from __future__ import annotations

import pytest

from labcore.plot import bar_plot, line_plot

PNG = b"\x89PNG\r\n\x1a\n"


def test_line_and_bar_plots_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    p = line_plot(tmp_path / "sub" / "scaling.png", {"ours": ([1, 10, 100], [1, 5, 20]),
                  "dense": ([1, 10, 100], [1, 100, 10000])}, xlabel="N", ylabel="s",
                  loglog=True)  # fmt: skip
    assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5000
    b = bar_plot(tmp_path / "arms.png", {"a": (0.5, 0.1), "b": (0.7, 0.0)}, ylabel="acc")
    assert b.read_bytes()[:8] == PNG
    assert sorted(x.name for x in tmp_path.rglob("*")) == ["arms.png", "scaling.png", "sub"]
