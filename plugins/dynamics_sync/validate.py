"""Validate with Great Expectations: split the rows a target would refuse off the batch, never stop it.

Each entity and target side gets a suite built from the entity config (required fields, maximum lengths,
email format: the Dynamics rules a write must meet, since Dataverse itself does not enforce Business
Required columns on API writes). The suite runs over the rows' values after the write, with COMPLETE
results keyed by row, so every failing row is known by key: it is set aside with its reasons and the
rest of the batch goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dynamics_sync.entities import EntitySpec
from dynamics_sync.fieldtypes import TEXT

# GX logs hundreds of lines at import once Airflow's logging is configured, prints progress bars and
# would phone home for analytics; none of that belongs in a task log or on a machine with no internet.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TQDM_DISABLE", "1")
for _name in ("great_expectations", "great_expectations._docs_decorators"):
    logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_DATA_DOCS = Path(__file__).resolve().parents[2] / ".local" / "data_docs"
EMAIL_REGEX = r"^[^@\s]+@[^@\s]+\.[A-Za-z0-9-]{2,}$"
KEY = "_row"
MARKETO_TEXT_MAX = 255


@dataclass
class Rule:
    kind: str  # not_null | max_length | email | in_set | single_value
    column: str
    limit: int | None = None
    allowed: tuple[Any, ...] | None = None

    def describe(self, spec: EntitySpec, side: str) -> str:
        name = spec.field(self.column).dynamics if side == "dynamics" else self.column
        if self.kind == "not_null":
            return f"{name} is required"
        if self.kind == "max_length":
            return f"{name} is longer than {self.limit} characters"
        if self.kind == "single_value":
            return f"{name} holds a list or an object where the API documents a single value"
        if self.kind == "in_set":
            return f"{name} is not one of the Dynamics choices {list(self.allowed or ())}"
        return f"{name} is not a valid email address"


def rules_for(spec: EntitySpec, side: str, creating: bool = False) -> list[Rule]:
    """The checks a row bound for `side` must pass. Marketo matches people by email, so it needs one."""
    rules: list[Rule] = []
    for f in spec.fields:
        if side == "dynamics" and f.one_way:
            continue  # never written to Dynamics (a lookup, or a field marked one way)
        if side == "dynamics":
            if f.required:
                rules.append(Rule("not_null", f.marketo))
            if f.max_length:
                rules.append(Rule("max_length", f.marketo, f.max_length))
            if f.options:
                rules.append(Rule("in_set", f.marketo, allowed=tuple(f.options)))
        else:
            if f.marketo_required:
                rules.append(Rule("not_null", f.marketo))
            if f.marketo_type is None or f.marketo_type in TEXT:
                rules.append(Rule("max_length", f.marketo, MARKETO_TEXT_MAX))
        if f.format == "email":
            rules.append(Rule("email", f.marketo))
    if side == "marketo" and creating:
        rules.insert(0, Rule("not_null", "email"))
    return rules


def _expectation(rule: Rule) -> Any:
    import great_expectations.expectations as gxe

    if rule.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=rule.column)
    if rule.kind == "max_length":
        return gxe.ExpectColumnValueLengthsToBeBetween(column=rule.column, max_value=rule.limit)
    if rule.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(column=rule.column, value_set=list(rule.allowed or ()))
    return gxe.ExpectColumnValuesToMatchRegex(column=rule.column, regex=EMAIL_REGEX)


def data_docs_root() -> Path:
    return Path(os.environ.get("DYNAMICS_SYNC_DATA_DOCS") or DEFAULT_DATA_DOCS)


def run_suite(frame: pd.DataFrame, rules: list[Rule], suite_name: str,
              data_docs: bool = True) -> dict[int, list[tuple[Rule, Any]]]:
    """Validate `frame` (must carry the KEY column); returns failing row keys with rule and value.

    Runs as a GX checkpoint in a file context of its own per suite, so the Data Docs of the suite's last
    run are rebuilt under data_docs_root()/<suite>/ (earlier runs' results are dropped first: the docs
    show the last run, the activity_log keeps the history). Without `data_docs` (all but the last part of
    a big batch) the suite runs and the docs are left for the last part to rebuild.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.data_context.context_factory import project_manager

    root = data_docs_root() / suite_name
    shutil.rmtree(root / "gx" / "uncommitted" / "validations", ignore_errors=True)
    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_or_update_pandas("dynamics_sync")
    asset = source.get_asset("rows") if "rows" in source.get_asset_names() else source.add_dataframe_asset("rows")
    if "all" in [d.name for d in asset.batch_definitions]:
        batch_def = asset.get_batch_definition("all")
    else:
        batch_def = asset.add_batch_definition_whole_dataframe("all")
    expectations = []
    for index, rule in enumerate(rules):
        expectation = _expectation(rule)
        expectation.meta = {"rule": index}
        expectations.append(expectation)
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite_name, data=batch_def, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
        name=suite_name, validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="data_docs")] if data_docs else [],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [KEY]},
    ))
    try:
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    finally:
        # GX keeps the last context (and through it this batch's data) as its module-wide project; let go of
        # it, so the part's memory is freed with the part (see dynamics_sync.memory).
        project_manager.set_project(None)
    failures: dict[int, list[tuple[Rule, Any]]] = {}
    for validation in outcome.run_results.values():
        for result in validation.results:
            if result.success:
                continue
            rule = rules[int(result.expectation_config.meta["rule"])]
            for item in result.result.get("unexpected_index_list") or []:
                value = item.get(rule.column)
                failures.setdefault(int(item[KEY]), []).append((rule, None if _missing(value) else value))
    return failures


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _not_single_values(checked: pd.DataFrame, spec: EntitySpec) -> dict[int, list[tuple[Rule, Any]]]:
    """Rows where an API sent a list or an object for a field: reported, and blanked so the suite can run."""
    failures: dict[int, list[tuple[Rule, Any]]] = {}
    for column in (c for c in spec.marketo_fields if c in checked):
        wrong = checked[column].map(lambda v: isinstance(v, list | dict | tuple | set))
        for index in checked.index[wrong]:
            failures.setdefault(int(checked.at[index, KEY]), []).append(
                (Rule("single_value", column), json.dumps(checked.at[index, column], default=str)[:200]))
            checked.at[index, column] = None
    return failures


@dataclass
class Split:
    good: pd.DataFrame
    bad: pd.DataFrame  # the failing rows plus a `reasons` column (JSON list of {field, rule, value, reason})


def split_invalid(frame: pd.DataFrame, spec: EntitySpec, side: str, data_docs: bool = True) -> Split:
    """Split rows bound for `side` into those that may be written and those that must not be."""
    if frame.empty:
        return Split(frame, frame.assign(reasons=pd.Series(dtype=object)))
    checked = frame.reset_index(drop=True).copy()
    checked[KEY] = range(len(checked))
    # The rows carry each record's values after the write, so a write that would leave a record without
    # a required value is refused even when that field is not in the payload.
    creating = bool((checked.get("op") == "create").any()) if "op" in checked else False
    rules = [r for r in rules_for(spec, side, creating) if r.column in checked]
    for column in {r.column for r in rules}:
        checked[column] = checked[column].astype(object)
    wrong_types = _not_single_values(checked, spec)
    # GX sees only the columns its rules check: the rest of a row (snapshots, payload) would only add to what
    # it holds while it runs.
    failures = run_suite(checked[[KEY, *dict.fromkeys(r.column for r in rules)]], rules, f"{spec.name}_to_{side}",
                         data_docs)
    for key, items in wrong_types.items():
        failures.setdefault(key, []).extend(items)
    if side == "marketo" and creating:
        # Email is needed only to create a Marketo person; an update by id may lack one.
        for key in list(failures):
            if checked.at[key, "op"] != "create":
                failures[key] = [(r, v) for r, v in failures[key] if r.kind != "not_null"]
                if not failures[key]:
                    del failures[key]
    reasons = {
        key: json.dumps([
            {"field": r.column, "rule": r.kind, "value": None if v is None else str(v),
             "reason": r.describe(spec, side)}
            for r, v in items
        ])
        for key, items in failures.items()
    }
    bad_mask = checked[KEY].isin(list(reasons))
    bad = checked[bad_mask].copy()
    bad["reasons"] = bad[KEY].map(reasons)
    return Split(checked[~bad_mask].drop(columns=[KEY]), bad.drop(columns=[KEY]))
