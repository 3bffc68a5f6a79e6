"""Registering a search's winner as the ``challenger`` version of the controller model.

The winner is explorer-written code: it is logged with ``log_candidate_model`` (never
imported here) at its chosen β, in the search run, as the logged model ``controller``. The
logged model keeps the full record of the search and validation numbers as tags
(``challenger_tags``); the version gets three short, rounded ones (``challenger_version_tags``)
and a description with the validation table and a link to the search run
(``challenger_description``): the registry lists a version's tags in one narrow column.
"""

from __future__ import annotations

import json

from mlflow_autotts.promotion.gate import accuracy_text, tokens_text
from mlflow_autotts.search.extract import check_source
from mlflow_autotts.search.selection import Point, Selection
from mlflow_autotts.tracking.mlflow_utils import ui_route, ui_url
from mlflow_autotts.tracking.model import log_candidate_model
from mlflow_autotts.tracking.model_registry import register_logged_model

MODEL_NAME = "controller"
"""The logged model's name (the version's "source model"): what it is, not an alias."""


def challenger_tags(selection: Selection, parent_run_id: str) -> dict[str, str]:
    """The logged model's tags: where it comes from and every search and validation number."""
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


def vs_text(p: Point, reference: Point) -> str:
    """``+0.21 pts, 0.35x tokens``: ``p`` against a reference point."""
    ratio = f"{p.mean_tokens / reference.mean_tokens:.2f}x" if reference.mean_tokens else "n/a"
    return f"{p.accuracy - reference.accuracy:+.2f} pts, {ratio} tokens"


def challenger_version_tags(selection: Selection) -> dict[str, str]:
    """The version's three tags: validation accuracy, tokens, and both against SC@N's."""
    p = selection.winner_point
    assert p is not None
    return {"autotts.validation.accuracy": accuracy_text(p.accuracy),
            "autotts.validation.tokens": tokens_text(p.mean_tokens),
            "autotts.validation.vs_sc64": vs_text(p, selection.sc64)}


def challenger_description(selection: Selection, run: tuple[str, str]) -> str:
    """The version's description (markdown): where it comes from (``run``: the search run's
    name and link), and the validation table: the winner, SC@N and CMC's β points."""
    sel = selection
    sc = sel.sc_label.upper()
    p, c = sel.winner_point, sel.winner
    assert p is not None and c is not None
    beta = f" at β = {p.beta:g}" if p.beta is not None else ""
    lines = [f"**Search winner** of [{run[0]}]({run[1]}): candidate `{c.id}` (explorer `{c.proposal.explorer}`)"
             f"{beta}, picked on the validation split.", "",
             f"| validation | accuracy | tokens | vs {sc} |", "|---|--:|--:|--:|"]
    bound = ""
    if p.vs_sc64 is not None:
        bound = f" [{p.vs_sc64[0]:+.2f}, {p.vs_sc64[2]:+.2f}]"
    lines.append(f"| **winner** | {accuracy_text(p.accuracy)} | {tokens_text(p.mean_tokens)} | "
                 f"{vs_text(p, sel.sc64)}{bound} |")
    lines.append(f"| {sc} | {accuracy_text(sel.sc64.accuracy)} | {tokens_text(sel.sc64.mean_tokens)} | |")
    for b in sel.baselines:
        if b.label == "cmc":
            lines.append(f"| CMC β={b.beta:g} | {accuracy_text(b.accuracy)} | {tokens_text(b.mean_tokens)} | "
                         f"{vs_text(b, sel.sc64)} |")
    facts = [f"reaches {sc}'s accuracy: {'yes' if sel.reached_sc64 else 'no'}"]
    curve = sel.winner_curve
    if curve is not None:
        g = curve.gain_over_cmc
        facts.append(f"gain over CMC's curve {g[1]:+.2f} pts [{g[0]:+.2f}, {g[2]:+.2f}], "
                     f"dominates CMC: {'yes' if curve.dominates else 'no'}")
    facts.append(f"selection tier {sel.tier} at confidence {sel.confidence:g}")
    lines += ["", "; ".join(facts) + ". Brackets: the bootstrap interval. The logged model's tags hold every number."]
    return "\n".join(lines) + "\n"


def register_challenger(selection: Selection, parent_run_id: str, model_name: str, alias: str) -> str:
    """Log the winner at its β in the (active) search run and register it as a version of
    ``model_name`` with ``alias``; returns the version."""
    import mlflow

    c, p = selection.winner, selection.winner_point
    assert c is not None and p is not None
    class_name = c.proposal.class_name or check_source(c.proposal.source).class_name
    metrics = {"validation.accuracy": p.accuracy, "validation.mean_tokens": p.mean_tokens}
    label = c.proposal.meta.get("label") if isinstance(c.proposal.meta.get("label"), str) else class_name
    info = log_candidate_model(c.proposal.source, class_name, label, p.beta if p.beta is not None else 0.5,
                               metrics=metrics, tags=challenger_tags(selection, parent_run_id), name=MODEL_NAME)
    parent = mlflow.tracking.MlflowClient().get_run(parent_run_id).info
    run = (parent.run_name or parent_run_id, ui_url(ui_route(parent.experiment_id, parent_run_id)))
    reg = register_logged_model(info.model_uri, name=model_name, aliases=[alias],
                                description=challenger_description(selection, run),
                                tags=challenger_version_tags(selection))
    mlflow.set_tags({"autotts.challenger": f"models:/{model_name}/{reg.version}"})
    return reg.version
