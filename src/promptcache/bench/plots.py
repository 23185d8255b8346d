"""PNG plots of one or more bench runs (matplotlib, no display needed).

Three views, one line or colour per server: the distribution of time to first token
(empirical CDF), time to first token against the cached fraction of the prompt, and
output tokens per second over the run.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from promptcache.bench.records import RequestRecord

Runs = dict[str, list[RequestRecord]]
PANELS = ("ttft_cdf", "ttft_vs_cached", "throughput")


def write_plots(runs: Runs, out_dir: Path, title: str) -> list[Path]:
    """One PNG per view plus `summary.png` with all three side by side."""
    paths = []
    for name in PANELS:
        fig, ax = plt.subplots(figsize=(6, 4))
        _DRAW[name](ax, runs)
        ax.set_title(f"{title}\n{ax.get_title()}", fontsize=9)
        paths.append(_save(fig, out_dir / f"{name}.png"))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    for ax, name in zip(axes, PANELS, strict=True):
        _DRAW[name](ax, runs)
    fig.suptitle(title, fontsize=10)
    paths.append(_save(fig, out_dir / "summary.png"))
    return paths


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ttft_cdf(ax: Axes, runs: Runs) -> None:
    for name, recs in runs.items():
        ttfts = sorted(t for r in recs if r.ok and (t := r.ttft) is not None)
        if ttfts:
            ys = [(i + 1) / len(ttfts) for i in range(len(ttfts))]
            ax.step(ttfts, ys, where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("time to first token (s, log)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("TTFT distribution")
    _legend(ax)


def _ttft_vs_cached(ax: Axes, runs: Runs) -> None:
    for name, recs in runs.items():
        # without usage the cached fraction is unknown: such requests are left out
        pts = [
            (r.cached_fraction, r.ttft)
            for r in recs
            if r.ok and r.ttft is not None and r.usage_reported
        ]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, alpha=0.7, label=name)
    ax.set_yscale("log")
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("cached fraction of the prompt (usage)")
    ax.set_ylabel("time to first token (s, log)")
    ax.set_title("TTFT vs cached fraction")
    _legend(ax)


def _throughput(ax: Axes, runs: Runs) -> None:
    for name, recs in runs.items():
        times = sorted(t for r in recs if r.ok for t in r.chunk_times)
        if not times:
            continue
        width = max(1.0, times[-1] / 60)  # about 60 bins over the run
        n = int(times[-1] // width) + 1
        counts = [0] * n
        for t in times:
            counts[int(t // width)] += 1
        ax.plot([(i + 0.5) * width for i in range(n)], [c / width for c in counts], label=name)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("output tokens/s (streamed chunks)")
    ax.set_title("throughput over time")
    _legend(ax)


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


_DRAW = {"ttft_cdf": _ttft_cdf, "ttft_vs_cached": _ttft_vs_cached, "throughput": _throughput}
