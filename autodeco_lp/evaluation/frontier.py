"""The static frontier: where a per-token decoding stands against every fixed (T, P) that ran.

A static decoding trades pass@1 (one sample right) against pass@k (any of k samples right): low T
raises the first, high T the second. A per-token method (AutoDeco) is only interesting if it does
better than *every* static on at least one of the two axes, not just better than `default`. This
module takes a report's `methods` (`autodeco eval`'s results.json) and answers that, with paired
bootstrap intervals over problems (`stats.paired_bootstrap`) so that noise is not read as a win.

Pure functions over the summaries `summary.summarise` writes; the fields read are:

- `temperature`, `top_p`: the static setting (None for non-static methods);
- `pass@1`: mean over seeds of the mean over problems;
- `pass@k`: `{str(k): mean}`, the unbiased pass@k averaged the same way;
- `per_problem`: `[n_problems]` floats, each problem's pass@1 averaged over seeds;
- `per_problem_pass@k`: `{str(k): [n_problems] floats}` (absent in results written before it
  existed: points and the Pareto frontier still work from the means, verdicts need it).

The statics are `default`, every `static:T,P`, `oracle-validation` (a static setting chosen on
other problems, run on these) and each point of `oracle-grid`'s two sweeps; one (T, P) appearing
under several names counts once (the first name in that order). `meanshift` is static too, but
its (T, P) is read off AutoDeco on these problems, so it is a candidate, not part of the frontier.
"""

from __future__ import annotations

from autodeco_lp.evaluation.stats import paired_bootstrap

DEFAULT_K = 16
MIN_STATICS = 3  # fewer static decodings do not make a frontier worth reporting (nor an oracle-test)
CANDIDATES = ("autodeco", "temperature-only", "top-p-only", "meanshift")
ABOVE = "above the static frontier"
ON = "on the frontier (within noise)"
BELOW = "below the frontier"


def _setting(m: dict) -> tuple[float, float]:
    # Rounded like the result cache's key (`Decoding.key`, 3 decimals): one cache entry, one point.
    return round(m["temperature"], 3), round(m["top_p"], 3)


def static_decodings(methods: dict[str, dict]) -> dict[str, dict]:
    """Every distinct static decoding in `methods`, name -> its summary (see the module docstring).

    Names: the method's own (`default`, `static:0.5,0.9`); `oracle-validation` and grid points are
    named `static:T,P` after their setting (e.g. `static:0.3,1.0`), unless that setting already ran
    under another name.
    """
    found: dict[tuple[float, float], tuple[str, dict]] = {}

    def add(name: str, m: dict) -> None:
        if m.get("temperature") is not None and m.get("top_p") is not None:
            found.setdefault(_setting(m), (name, m))

    if "default" in methods:
        add("default", methods["default"])
    for name, m in methods.items():
        if name.startswith("static:"):
            add(name, m)
    extra = [methods["oracle-validation"]] if "oracle-validation" in methods else []
    grid = methods.get("oracle-grid", {}).get("grid") or {}
    extra += [*grid.get("temperature_sweep", []), *grid.get("top_p_sweep", [])]
    for m in extra:
        add(f"static:{m['temperature']},{m['top_p']}", m)
    return {name: m for name, m in found.values()}


def best_static(statics: dict[str, dict]) -> str:
    """The name of the static with the highest pass@1; ties go to the lower T, then the lower P.

    pass@1 is compared at 12 decimals: the same number of correct samples summed in another order
    is the same score, not a float-noise win.
    """
    if not statics:
        raise ValueError("no static decodings to choose from")
    return min(statics, key=lambda n: (-round(statics[n]["pass@1"], 12), *_setting(statics[n])))


def available_k(methods: dict[str, dict], k: int | None = None) -> int:
    """The k of the frontier's pass@k axis: `k` if given, else 16, else the largest k > 1 that every
    static has a pass@k for. Raises ValueError (listing what is there) when there is none."""
    statics = static_decodings(methods)
    common = set.intersection(*(set(map(int, m.get("pass@k", {}))) for m in statics.values())) if statics else set()
    common.discard(1)
    if k is None:
        k = DEFAULT_K if DEFAULT_K in common else max(common, default=None)
    if k is None or k not in common:
        have = ", ".join(map(str, sorted(common))) or "none"
        raise ValueError(
            f"the static frontier needs pass@k (k > 1) of every static decoding; asked for k = {k}, "
            f"{len(statics)} statics have k = {have} (run autodeco eval with --samples >= 4 and static decodings)"
        )
    return k


def points(statics: dict[str, dict], k: int) -> dict[str, tuple[float, float]]:
    """name -> (pass@1, pass@k) of each static, from the means (old results files suffice)."""
    return {name: (m["pass@1"], m["pass@k"][str(k)]) for name, m in statics.items()}


def pareto_frontier(pts: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point dominates (>= on both axes and > on one), sorted by the
    first axis (ties: the second axis descending, then the name). Equal points are all kept."""

    def dominated(a: tuple[float, float]) -> bool:
        return any(b[0] >= a[0] and b[1] >= a[1] and b != a for b in pts.values())

    keep = [n for n, p in pts.items() if not dominated(p)]
    return sorted(keep, key=lambda n: (pts[n][0], -pts[n][1], n))


def _nearest(names: list[str], pts: dict[str, tuple[float, float]], at: tuple[float, float]) -> list[str]:
    # Euclidean distance in the (pass@1, pass@k) plane between the means; ties: by name.
    return sorted(names, key=lambda n: ((pts[n][0] - at[0]) ** 2 + (pts[n][1] - at[1]) ** 2, n))


def verdict(candidate: dict, statics: dict[str, dict], k: int) -> dict:
    """Where one candidate stands against the statics, with paired intervals over problems.

    For every static s, two paired bootstrap intervals of candidate - s (positive: the candidate is
    better), over problems: of pass@1 (`per_problem`) and of pass@k (`per_problem_pass@k[k]`).
    An interval above 0 means significantly better, below 0 significantly worse.

    - s *dominates* the candidate when s is significantly better on one axis and not significantly
      worse on the other;
    - the candidate *beats* s when it is significantly better than s on at least one axis.

    Verdict: BELOW if some static dominates it; else ABOVE if it beats every static (no static is at
    least as good on both axes within noise); else ON. The two cases exclude each other: a static
    that dominates is not beaten on either axis. There is no multiplicity correction: BELOW needs
    one significant interval among 2 x len(statics) (anti-conservative), ABOVE needs all of them
    (conservative); the docs say so where they report verdicts.

    `deciding` names the statics behind the verdict, nearest first: for BELOW those that dominate;
    for ON those it does not beat (as good on both axes within noise); for ABOVE the Pareto frontier
    (each beaten). *Nearest* = the smallest Euclidean distance between the mean points
    (pass@1, pass@k); `nearest` is the first of `deciding`.

    Returns `{"verdict", "pass@1", "pass@<k>", "nearest", "deciding": [names],
    "versus": {static: {"pass@1": interval, "pass@<k>": interval}}}` (`pass@<k>` spelt with the
    number, e.g. `pass@16`), intervals as
    `PairedInterval.to_dict()` (mean, low, high, problems, level, significant).
    """
    key = str(k)
    pts = points(statics, k)
    at = (candidate["pass@1"], candidate["pass@k"][key])
    versus, dominating, not_beaten = {}, [], []
    for name, s in statics.items():
        d1 = paired_bootstrap(candidate["per_problem"], s["per_problem"])
        dk = paired_bootstrap(candidate["per_problem_pass@k"][key], s["per_problem_pass@k"][key])
        versus[name] = {"pass@1": d1.to_dict(), f"pass@{k}": dk.to_dict()}
        if (d1.high < 0 and dk.low <= 0) or (dk.high < 0 and d1.low <= 0):
            dominating.append(name)
        elif not (d1.low > 0 or dk.low > 0):
            not_beaten.append(name)
    if dominating:
        outcome, deciding = BELOW, dominating
    elif not_beaten:
        outcome, deciding = ON, not_beaten
    else:
        outcome, deciding = ABOVE, pareto_frontier(pts)
    deciding = _nearest(deciding, pts, at)
    return {
        "verdict": outcome,
        "pass@1": at[0],
        f"pass@{k}": at[1],
        "nearest": deciding[0],
        "deciding": deciding,
        "versus": versus,
    }


def static_frontier(
    methods: dict[str, dict], k: int | None = None, extra: dict[str, dict] | None = None
) -> dict | None:
    """The frontier section of results.json, or None when there is nothing trustworthy to say:
    fewer than MIN_STATICS statics, or statics without per-problem pass@k (results written before
    it existed, or --samples < 4).

    Returns `{"k": k, "statics": {name: {"temperature", "top_p", "pass@1", "pass@<k>"}},
    "pareto": [names by pass@1], "candidates": {name: verdict(...)}}` for each of CANDIDATES
    present with per-problem pass@k, then each of `extra`: candidates from other runs on the same
    problems (e.g. other heads), label -> method summary, judged the same way.
    """
    clash = sorted(set(extra or {}) & set(methods))
    if clash:
        raise ValueError(f"`extra` candidates {clash} have the names of methods of the run; label them otherwise")
    statics = static_decodings(methods)
    if len(statics) < MIN_STATICS:
        return None
    try:
        k = available_k(methods, k)
    except ValueError:
        return None
    if any(str(k) not in s.get("per_problem_pass@k", {}) for s in statics.values()):
        return None
    pts = points(statics, k)
    return {
        "k": k,
        "statics": {
            n: {"temperature": s["temperature"], "top_p": s["top_p"], "pass@1": pts[n][0], f"pass@{k}": pts[n][1]}
            for n, s in statics.items()
        },
        "pareto": pareto_frontier(pts),
        "candidates": {
            name: verdict(m, statics, k)
            for name, m in [*((n, methods.get(n, {})) for n in CANDIDATES), *(extra or {}).items()]
            if str(k) in m.get("per_problem_pass@k", {})
        },
    }
