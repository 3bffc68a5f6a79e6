"""Registering a search's winner as the ``challenger`` version of the controller model.

The winner is explorer-written code: it is logged with ``log_candidate_model`` (never
imported here) at its chosen β, in its own candidate run, and registered with its search
and validation numbers as tags.
"""

from __future__ import annotations

import json

from mlflow_autotts.search.extract import check_source
from mlflow_autotts.search.selection import Selection


def challenger_tags(selection: Selection, parent_run_id: str) -> dict[str, str]:
    sel = selection
    p = sel.winner_point
    c = sel.winner
    assert p is not None and c is not None
    search_point = next(((a, t) for b, a, t in c.curve() if b == p.beta), (None, None))
    tags = {
        "autotts.search_run": parent_run_id,
        "autotts.candidate_id": c.id,
        "autotts.explorer": c.proposal.explorer,
        "autotts.beta": json.dumps(p.beta),
        "autotts.validation.accuracy": f"{p.accuracy:.4f}",
        "autotts.validation.mean_tokens": f"{p.mean_tokens:.1f}",
        "autotts.validation.sc64_accuracy": f"{sel.sc64.accuracy:.4f}",
        "autotts.validation.sc64_mean_tokens": f"{sel.sc64.mean_tokens:.1f}",
        "autotts.validation.reaches_sc64": str(sel.reached_sc64).lower(),
    }
    if p.vs_sc64 is not None:
        tags["autotts.validation.vs_sc64"] = "{:+.2f} [{:+.2f}, {:+.2f}]".format(p.vs_sc64[1], p.vs_sc64[0], p.vs_sc64[2])
    curve = sel.winner_curve
    if curve is not None:
        g = curve.gain_over_cmc
        tags["autotts.validation.gain_over_cmc"] = f"{g[1]:+.2f} [{g[0]:+.2f}, {g[2]:+.2f}]"
        tags["autotts.validation.dominates_cmc"] = str(curve.dominates).lower()
    tags["autotts.selection.confidence"] = f"{sel.confidence:g}"
    tags["autotts.selection.tier"] = str(sel.tier)
    if search_point[0] is not None:
        tags["autotts.search.accuracy"] = f"{search_point[0]:.4f}"
        tags["autotts.search.mean_tokens"] = f"{search_point[1]:.1f}"
    for b in sel.baselines:
        if b.label == "cmc" and b.beta == 0.5:
            tags["autotts.validation.cmc_0.5_mean_tokens"] = f"{b.mean_tokens:.1f}"
    return tags


def register_challenger(selection: Selection, parent_run_id: str, model_name: str, alias: str) -> str:
    """Log the winner at its β in the (active) search run and register it as a version of
    ``model_name`` with ``alias``; returns the version."""
    import mlflow

    from mlflow_autotts.tracking.model import log_candidate_model
    from mlflow_autotts.tracking.model_registry import register_logged_model

    c, p = selection.winner, selection.winner_point
    assert c is not None and p is not None
    class_name = c.proposal.class_name or check_source(c.proposal.source).class_name
    tags = challenger_tags(selection, parent_run_id)
    metrics = {"validation.accuracy": p.accuracy, "validation.mean_tokens": p.mean_tokens}
    label = c.proposal.meta.get("label") if isinstance(c.proposal.meta.get("label"), str) else class_name
    info = log_candidate_model(c.proposal.source, class_name, label, p.beta if p.beta is not None else 0.5,
                               metrics=metrics, tags=tags, name="challenger")
    description = (f"Search {parent_run_id}, candidate {c.id} at beta={p.beta:g}: validation accuracy "
                   f"{p.accuracy:.2f}% with {p.mean_tokens:,.0f} mean tokens ({selection.sc_label.upper()}: {selection.sc64.accuracy:.2f}% "
                   f"with {selection.sc64.mean_tokens:,.0f}).")
    reg = register_logged_model(info.model_uri, name=model_name, aliases=[alias],
                                description=description, tags=tags, metrics=metrics)
    mlflow.set_tags({"autotts.challenger": f"models:/{model_name}/{reg.version}"})
    return reg.version
