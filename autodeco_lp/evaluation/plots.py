"""Figures (matplotlib, the `plots` extra): per-token T and P (paper Figure 5), the oracle grid
against AutoDeco and MeanShift (Figure 3), pass@k curves, the static frontier (pass@1 vs pass@k)."""

from __future__ import annotations

from pathlib import Path

from autodeco_lp.evaluation.frontier import available_k, pareto_frontier, points, static_decodings


def _pyplot():
    # matplotlib is optional (the `plots` extra): imported when a figure is drawn, with an install hint.
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise ValueError("plots need matplotlib: pip install 'autodeco-lp[plots]'") from exc
    return plt


def _save(plt, fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)  # `--out figures/run1/p.png` on a fresh clone
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_trace(completion, out: Path) -> Path:
    """Per-token T and P along one generation; tokens on the x axis."""
    plt = _pyplot()
    steps = range(len(completion.tokens))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(completion.tokens)), 3.6))
    ax.plot(steps, completion.temperature, marker="o", label="temperature T")
    ax.plot(steps, completion.top_p, marker="s", label="top-p P")
    ax.set_xticks(list(steps), [t.replace("\n", "\\n") for t in completion.tokens], rotation=70, fontsize=8)
    ax.set_ylim(0, max(1.05, max(completion.temperature, default=1) * 1.05))
    ax.set_ylabel("predicted value")
    ax.set_title(completion.prompt[:80])
    ax.legend(loc="lower right")
    return _save(plt, fig, out)


def plot_grid(report: dict, out: Path) -> Path:
    """pass@1 of the oracle grid's two sweeps, with AutoDeco, MeanShift, greedy and default as lines."""
    plt = _pyplot()
    methods = report["methods"]
    grid = methods["oracle-grid"]["grid"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    sweeps = (
        ("temperature_sweep", "temperature", "T (P = 1)"),
        ("top_p_sweep", "top_p", f"P (T = {grid['best_temperature']:.1f})"),
    )
    for ax, (key, field, label) in zip(axes, sweeps):
        xs = [g[field] for g in grid[key]]
        ys = [g["pass@1"] for g in grid[key]]
        errs = [g["pass@1_std"] for g in grid[key]]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label="static grid")
        for name, style in (("autodeco", "-"), ("meanshift", "--"), ("greedy", ":"), ("default", "-.")):
            if name in methods:
                ax.axhline(
                    methods[name]["pass@1"],
                    linestyle=style,
                    color="C" + str(1 + ["autodeco", "meanshift", "greedy", "default"].index(name)),
                    label=name,
                )
        ax.set_xlabel(label)
    axes[0].set_ylabel("pass@1")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{report['settings']['task']}: oracle grid vs AutoDeco")
    return _save(plt, fig, out)


def plot_passk(report: dict, out: Path) -> Path:
    """pass@k against k for every method with k > 1 estimates; a ValueError when no method has one
    (fewer samples per problem than the smallest k > 1), instead of an empty figure."""
    curves = {}  # method -> sorted ks, for the methods with a k > 1
    for name, m in report["methods"].items():
        ks = sorted(int(k) for k in m["pass@k"])
        if len(ks) > 1:
            curves[name] = ks
    if not curves:
        samples = report["settings"].get("samples", "fewer than 2")
        raise ValueError(
            f"no method in these results has pass@k for a k > 1 ({samples} sample(s) per problem; pass@k needs at "
            "least k samples), so there is no curve to draw; run autodeco eval with --samples 2 or more "
            "(e.g. --samples 16)"
        )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, ks in curves.items():
        m = report["methods"][name]
        ax.plot(ks, [m["pass@k"][str(k)] for k in ks], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k")
    ax.legend(fontsize=8)
    ax.set_title(report["settings"]["task"])
    return _save(plt, fig, out)


# Methods drawn over the statics: (marker, colour); greedy is a vertical line (pass@1 only).
EXTRA_COLOURS = ("C6", "C8", "C9", "C0")  # C7 is grey, the statics' colour
FRONTIER_MARKS = {
    "autodeco": ("*", "C3"),
    "temperature-only": ("^", "C4"),
    "top-p-only": ("v", "C5"),
    "meanshift": ("D", "C2"),
    "oracle-validation": ("X", "C1"),
}


def plot_frontier(report: dict, out: Path, k: int | None = None, extra: dict[str, dict] | None = None) -> Path:
    """x = pass@1, y = pass@k (k: 16 or the largest available, `frontier.available_k`): every static
    decoding as a point labelled "T,P", the Pareto frontier as a line through its points by pass@1,
    AutoDeco and the other candidates as distinct markers (with their verdicts from the report's
    `frontier` section when it has one for this k), greedy as a vertical dotted line.
    `extra`: more candidates from other runs on the same problems (e.g. other heads), label -> method
    summary, drawn as "P" markers in colours of their own (not the statics' grey), with their verdicts
    when the report's `frontier` has them (`static_frontier(..., extra=...)`).

    Uses the means only, so results written before per-problem pass@k existed plot too."""
    methods = report["methods"]
    k = available_k(methods, k)  # ValueError (with what is there) when no static has a pass@k
    statics = static_decodings(methods)
    pts = points(statics, k)  # name -> (pass@1, pass@k)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.scatter([p[0] for p in pts.values()], [p[1] for p in pts.values()], color="0.55", s=18, label="static")
    for name, (x, y) in pts.items():
        label = f"{statics[name]['temperature']:g},{statics[name]['top_p']:g}"
        ax.annotate(label, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6, alpha=0.8)
    front = pareto_frontier(pts)
    ax.plot([pts[n][0] for n in front], [pts[n][1] for n in front], color="0.3", label="static frontier")
    frontier = report.get("frontier") or {}
    verdicts = frontier.get("candidates", {}) if frontier.get("k") == k else {}
    for name, (marker, colour) in FRONTIER_MARKS.items():
        m = methods.get(name)
        if m and str(k) in m["pass@k"]:
            label = f"{name}: {verdicts[name]['verdict']}" if name in verdicts else name
            ax.scatter([m["pass@1"]], [m["pass@k"][str(k)]], marker=marker, color=colour, s=90, label=label, zorder=3)
    for index, (label, m) in enumerate((extra or {}).items()):
        if str(k) not in m["pass@k"]:
            raise ValueError(f"`extra` candidate {label!r} has no pass@{k}; it has {sorted(m['pass@k'])}")
        ax.scatter(
            [m["pass@1"]],
            [m["pass@k"][str(k)]],
            marker="P",
            color=EXTRA_COLOURS[index % len(EXTRA_COLOURS)],
            s=90,
            label=f"{label}: {verdicts[label]['verdict']}" if label in verdicts else label,
            zorder=3,
        )
    if "greedy" in methods:
        ax.axvline(methods["greedy"]["pass@1"], linestyle=":", color="C0", label="greedy (pass@1)")
    ax.set_xlabel("pass@1")
    ax.set_ylabel(f"pass@{k}")
    ax.legend(fontsize=7)
    ax.set_title(f"{report['settings']['task']}: static frontier")
    return _save(plt, fig, out)


def plot_top_p_diagnosis(stats, curve_values, curve_losses, out: Path, title: str = "") -> Path:
    """Left: the heads' P (and T) against the base entropy per training position.
    Right: the soft top-p loss on the same positions for a constant P (the head's training target)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].scatter(stats.entropy.numpy(), stats.top_p.numpy(), s=6, alpha=0.5, label="predicted P")
    axes[0].scatter(stats.entropy.numpy(), stats.temperature.numpy(), s=6, alpha=0.5, label="predicted T")
    axes[0].set_xlabel("base model entropy at the position (nats)")
    axes[0].set_ylabel("head output")
    axes[0].legend(fontsize=8)
    axes[1].plot(curve_values, curve_losses, marker="o")
    axes[1].set_xlabel("constant P (heads' T)")
    axes[1].set_ylabel("mean soft top-p loss")
    fig.suptitle(title)
    return _save(plt, fig, out)
