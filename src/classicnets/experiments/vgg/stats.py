"""The claims' statistics: per-seed paired differences, their mean and spread, the verdict rule, and one
check per kind of claim. Results are {grid row key: {seed: reproduce.json record}}."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from classicnets import metrics
from classicnets.experiments.vgg.paper import TEST_PROTOCOLS, Claim

HOLDS, FAILS, UNSURE = "holds", "does not hold at this scale", "inconclusive"
RULE = ("For each seed k, d_k = (error of the compared net or protocol) - (error of the one the paper says "
        "is better), in top-1 percentage points on the same test images; m = mean of d_k, s = their sample "
        "standard deviation (the spread across seeds). A claim that X lowers the error holds if m > s, does "
        "not hold at this scale if m < -s, and is inconclusive if |m| <= s or there are fewer than 2 seeds. "
        "'No better' claims (LRN) hold unless X is better by more than s. Claims over protocols average d_k "
        "over all configurations first. Top-5 error is shown, not judged: with 10 classes it is near 0.")


def cell_errors(results: dict, config: str, protocol: str, metric: str = "top1_error") -> dict[int, float]:
    """{seed: error in %} of one cell: a grid row tested with one protocol."""
    return {seed: 100 * r["eval"]["protocols"][protocol][metric]
            for seed, r in results.get(config, {}).items()}


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample std); None for what too few values cannot give."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def paired(worse: dict[int, float], better: dict[int, float]) -> tuple[float | None, float | None, int]:
    """(m, s, n) of d_k = worse_k - better_k over the seeds both have."""
    d = [worse[k] - better[k] for k in sorted(set(worse) & set(better))]
    m, s = mean_std(d)
    return m, s, len(d)


def verdict(m: float | None, s: float | None, n: int, *, no_better: bool = False) -> str:
    """The rule of RULE. For `no_better` claims, m is the advantage the claim says does not exist."""
    if m is None or n < 2 or s is None:
        return UNSURE
    if no_better:
        return FAILS if m > s else HOLDS
    if m > s:
        return HOLDS
    if m < -s:
        return FAILS
    return UNSURE


def format_diff(m: float | None, s: float | None, n: int) -> str:
    """A paired difference and its spread, as the report writes it."""
    if m is None:
        return "no seeds to compare"
    if s is None:
        return f"difference {m:+.2f} pp (1 seed: no spread)"
    return f"difference {m:+.2f} pp (spread {s:.2f} over {n} seeds)"


def format_cell(values: dict[int, float]) -> str:
    """Mean ± std over seeds ("-" for none), as the report's tables write a cell."""
    m, s = mean_std(list(values.values()))
    if m is None:
        return "-"
    return f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "")


def judge(claim: Claim, results: dict) -> dict[str, Any]:
    """{"verdict", "details": [lines], ...} for one claim. Nets that did not learn prove nothing."""
    named = [] if claim.kind in ("protocol-lower", "combined") else [claim.a, *claim.b]
    stuck = [k for k in named if at_chance(results, k)]
    if stuck:
        line = f"{', '.join(stuck)} did not learn (single-scale error at chance level): nothing to compare"
        return {"verdict": UNSURE, "details": [line]}
    return CHECKS[claim.kind](claim, results)


def at_chance(results: dict, config: str) -> bool:
    """Is the mean single-scale accuracy at chance (classicnets.metrics.at_chance, the trainer's test for a
    net that is not learning)?"""
    runs = results.get(config, {})
    if not runs:
        return False
    classes = next(iter(runs.values()))["eval"]["classes"]
    accuracy = 1 - statistics.fmean(cell_errors(results, config, "single").values()) / 100
    return metrics.at_chance(accuracy, classes)


def _check_lower(claim: Claim, results: dict) -> dict[str, Any]:
    better = cell_errors(results, claim.a, claim.protocol)
    worse = cell_errors(results, claim.b[0], claim.protocol)
    m, s, n = paired(worse, better)
    v = verdict(m, s, n)
    line = (f"{claim.b[0]} {format_cell(worse)} % vs {claim.a} {format_cell(better)} % top-1 error "
            f"({TEST_PROTOCOLS[claim.protocol].title}); {claim.b[0]} - {claim.a}: {format_diff(m, s, n)}")
    return {"verdict": v, "details": [line], "m": m, "s": s, "n": n}


def _check_not_lower(claim: Claim, results: dict) -> dict[str, Any]:
    candidate = cell_errors(results, claim.a, claim.protocol)
    base = cell_errors(results, claim.b[0], claim.protocol)
    m, s, n = paired(base, candidate)  # how much the candidate lowers the error
    v = verdict(m, s, n, no_better=True)
    line = (f"{claim.b[0]} {format_cell(base)} % vs {claim.a} {format_cell(candidate)} % top-1 error "
            f"({TEST_PROTOCOLS[claim.protocol].title}); {claim.b[0]} - {claim.a}: {format_diff(m, s, n)}")
    return {"verdict": v, "details": [line], "m": m, "s": s, "n": n}


def _check_depth(claim: Claim, results: dict) -> dict[str, Any]:
    chain = [*claim.b, claim.a]
    errors = {k: cell_errors(results, k, claim.protocol) for k in chain}
    m, s, n = paired(errors[chain[0]], errors[claim.a])
    v = verdict(m, s, n)
    cells = ", ".join(f"{k} {format_cell(errors[k])} %" for k in chain)
    lines = [f"top-1 error ({TEST_PROTOCOLS[claim.protocol].title}): {cells}",
             f"{chain[0]} - {claim.a}: {format_diff(m, s, n)}"]
    for shallow, deep in itertools.pairwise(chain):
        sm, ss, sn = paired(errors[shallow], errors[deep])
        lines.append(f"step {shallow} -> {deep}: {verdict(sm, ss, sn)}, {format_diff(sm, ss, sn)}")
    return {"verdict": v, "details": lines, "m": m, "s": s, "n": n}


def _protocol_diffs(results: dict, worse: str, better: str) -> tuple[dict[int, float], list[str]]:
    """Per seed, the difference worse - better averaged over grid rows; and one line per row."""
    per_seed: dict[int, list[float]] = {}
    lines = []
    for config in results:
        if at_chance(results, config):
            lines.append(f"{config}: left out, it did not learn")
            continue
        w, b = cell_errors(results, config, worse), cell_errors(results, config, better)
        m, s, n = paired(w, b)
        if n:
            lines.append(f"{config}: {TEST_PROTOCOLS[worse].title} {format_cell(w)} % vs "
                         f"{TEST_PROTOCOLS[better].title} {format_cell(b)} %, {format_diff(m, s, n)}")
        for seed in set(w) & set(b):
            per_seed.setdefault(seed, []).append(w[seed] - b[seed])
    return {seed: statistics.fmean(v) for seed, v in per_seed.items()}, lines


def _check_protocol_lower(claim: Claim, results: dict) -> dict[str, Any]:
    diffs, lines = _protocol_diffs(results, claim.b[0], claim.a)
    m, s = mean_std(list(diffs.values()))
    n = len(diffs)
    v = verdict(m, s, n)
    head = (f"{TEST_PROTOCOLS[claim.b[0]].title} - {TEST_PROTOCOLS[claim.a].title}, averaged over "
            f"configurations: {format_diff(m, s, n)}")
    return {"verdict": v, "details": [head, *lines], "m": m, "s": s, "n": n}


def _check_combined(claim: Claim, results: dict) -> dict[str, Any]:
    lines, verdicts, numbers = [], [], {}
    for other in claim.b:
        diffs, per_config = _protocol_diffs(results, other, claim.a)
        m, s = mean_std(list(diffs.values()))
        n = len(diffs)
        verdicts.append(verdict(m, s, n))
        numbers[other] = {"m": m, "s": s, "n": n}
        lines.append(f"{TEST_PROTOCOLS[other].title} - {TEST_PROTOCOLS[claim.a].title}, averaged over "
                     f"configurations: {verdicts[-1]}, {format_diff(m, s, n)}")
        lines += [f"  - {line}" for line in per_config]
    if all(v == HOLDS for v in verdicts):
        v = HOLDS
    elif FAILS in verdicts:
        v = FAILS
    else:
        v = UNSURE
    return {"verdict": v, "details": lines, "versus": numbers}


def _check_warm(claim: Claim, results: dict) -> dict[str, Any]:
    """At least as good in the end, and better in the end or after the first epoch (faster)."""
    warm, cold = claim.a, claim.b[0]
    mf, sf, nf = paired(cell_errors(results, cold, claim.protocol), cell_errors(results, warm, claim.protocol))
    early = {k: _first_epoch_error(results, k) for k in (warm, cold)}
    me, se, ne = paired(early[cold], early[warm])
    final_v, early_v = verdict(mf, sf, nf), verdict(me, se, ne)
    if final_v == FAILS or (early_v == FAILS and final_v != HOLDS):
        v = FAILS
    elif HOLDS in (final_v, early_v):
        v = HOLDS
    else:
        v = UNSURE
    end = {k: cell_errors(results, k, claim.protocol) for k in (warm, cold)}
    lines = [(f"end ({TEST_PROTOCOLS[claim.protocol].title}): {cold} {format_cell(end[cold])} % vs {warm} "
              f"{format_cell(end[warm])} %; {cold} - {warm}: {final_v}, {format_diff(mf, sf, nf)}"),
             (f"after epoch 1 (the trainer's test, centre crop): {cold} {format_cell(early[cold])} % vs {warm} "
              f"{format_cell(early[warm])} %; {cold} - {warm}: {early_v}, {format_diff(me, se, ne)}")]
    return {"verdict": v, "details": lines, "m": mf, "s": sf, "n": nf}


def _first_epoch_error(results: dict, config: str) -> dict[int, float]:
    out = {}
    for seed, r in results.get(config, {}).items():
        history = r["train"]["history"]
        if history and history[0].get("test_acc") is not None:
            out[seed] = 100 * (1 - history[0]["test_acc"])
    return out


# One check per Claim.kind: (claim, results) -> {"verdict", "details", and its numbers}.
CHECKS: dict[str, Callable[[Claim, dict], dict[str, Any]]] = {
    "lower": _check_lower, "not-lower": _check_not_lower, "depth": _check_depth,
    "protocol-lower": _check_protocol_lower, "combined": _check_combined, "warm": _check_warm,
}
