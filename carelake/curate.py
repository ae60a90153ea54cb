"""curate runner: silver -> de-identified gold, held in staging until the grade check, the k-anonymity
gate, the PHI scan and the critical expectations pass, then published to the curated zone. A blocked
run leaves the last good release."""

from __future__ import annotations

from carelake.context import RunContext
from carelake.errors import ConfigError, PrivacyGateError
from carelake.keys import deid_key
from transforms.deid import Policy, deidentify
from transforms.kanon import STEP_COLUMN, LadderStep, k_anonymize
from transforms.marts import flag_readmissions
from transforms.normalize import RESOURCE_TABLES
from transforms.phi_scan import direct_identifiers, scan
from transforms.views import apply_view

__all__ = ["run", "deid_policy", "kanon_settings", "build_gold", "phi_gate", "publish", "DERIVED"]

#: Columns computed over a view's rows before de-identification, because they need what de-identification
#: removes (exact dates). name -> (transform, description for the dictionary, source)
DERIVED = {
    "readmitted_30d": (
        flag_readmissions,
        "For an inpatient stay that has ended: true when the same person (any hospital) was admitted as an "
        "inpatient again within 30 days of discharge; null for any other encounter.",
        "Encounter.class, Encounter.period (start, end), computed on exact dates before de-identification",
    ),
}


def deid_policy(config, as_of) -> Policy:
    """The de-identification settings of conf/deid.yaml with the key; raises when there is no key."""
    conf = config.deid
    key = conf.get("key") or {}
    return Policy(
        key=deid_key(env_var=key.get("env", "CARELAKE_DEID_KEY"), min_length=int(key.get("min_length", 32))),
        as_of=as_of,
        top_code=int((conf.get("age") or {}).get("top_code", 90)),
        postal_keep=int((conf.get("postal") or {}).get("keep", 3)),
        restricted_prefixes=tuple(str(p) for p in (conf.get("postal") or {}).get("restricted_prefixes", [])),
        regions=tuple((r["id"], tuple(str(p) for p in r.get("postal_prefixes", []))) for r in config.regions),
        shift_range=int((conf.get("date_shift") or {}).get("range_days", 30)),
    )


def kanon_settings(config) -> dict | None:
    """conf/deid.yaml `kanon:` checked: table, k (default 5), id column, quasi-identifiers, ladder."""
    conf = config.deid.get("kanon")
    if not conf:
        return None
    table = conf.get("table", "patient")
    if table not in (config.deid.get("tables") or {}):
        raise ConfigError(f"conf/deid.yaml: kanon.table {table!r} is not one of the policy's tables")
    quasi = [str(c) for c in conf.get("quasi_identifiers") or []]
    if not quasi:
        raise ConfigError("conf/deid.yaml: kanon.quasi_identifiers is empty; name the columns an attacker could link on")
    ladder = [LadderStep(str(s["column"]), "null" if s.get("to") is None else str(s["to"])) for s in conf.get("ladder") or []]
    return {"table": table, "k": int(conf.get("k", 5)), "id_column": conf.get("id_column", "person_id"),
            "quasi_identifiers": quasi, "ladder": ladder}


def _silver_table(view: dict, name: str) -> str:
    resource = view.get("resource")
    if resource not in RESOURCE_TABLES:
        raise ConfigError(f"conf/views/{name}.json: resource {resource!r} has no silver table")
    return f"silver.{RESOURCE_TABLES[resource]}"


def _derive(flat, table: str, names: list[str]):
    for name in names:
        if name not in DERIVED:
            raise ConfigError(f"conf/deid.yaml: table {table} derives {name!r}; known: {', '.join(DERIVED)}")
        flat = DERIVED[name][0](flat)
    return flat


def build_gold(ctx: RunContext) -> dict[str, int]:
    """Evaluate each policy table's view over silver, de-identify, write to staging; rows per table."""
    lake, spark = ctx.lake, ctx.spark
    policy = deid_policy(ctx.config, ctx.as_of)
    kanon = kanon_settings(ctx.config)
    counts = {}
    for name, table_policy in (ctx.config.deid.get("tables") or {}).items():
        source = table_policy.get("source", name)
        if source not in ctx.config.views:
            raise ConfigError(f"conf/deid.yaml: table {name} uses view {source!r}, which is not in conf/views/")
        view = ctx.config.views[source]
        silver_table = _silver_table(view, source)
        with ctx.progress.step(f"curate: gold.{name} from {silver_table}") as note:
            if not lake.exists(silver_table):
                raise ConfigError(f"gold.{name} needs {silver_table}, which does not exist yet: run normalize first")
            flat = _derive(apply_view(lake.read(spark, silver_table), view), name, list(table_policy.get("derive") or []))
            gold = deidentify(flat, table_policy, policy)
            if kanon and kanon["table"] == name:
                # the ladder reads its input once per step: write the view + de-identification once
                gold = lake.materialize(spark, gold, f"staging.deid_{name}")
                gold = k_anonymize(gold, k=kanon["k"], quasi_identifiers=kanon["quasi_identifiers"],
                                   ladder=kanon["ladder"], id_column=kanon["id_column"])
            counts[name] = lake.materialize(spark, gold, f"staging.gold_{name}").count()
            note["detail"] = f"{counts[name]} rows"
    return counts


def kanon_report(ctx: RunContext, staged) -> dict:
    """Records per k-anonymity outcome of the staged table: kept, generalized at each step, suppressed."""
    kanon = kanon_settings(ctx.config)
    by_step = {r[STEP_COLUMN]: r["count"] for r in staged.groupBy(STEP_COLUMN).count().collect()}
    ladder = kanon["ladder"]
    return {
        "table": f"gold.{kanon['table']}", "k": kanon["k"], "quasi_identifiers": kanon["quasi_identifiers"],
        "records": sum(by_step.values()), "unchanged": by_step.get(0, 0),
        "generalized": {f"{s.column}->{s.to}": by_step.get(i, 0) for i, s in enumerate(ladder, 1)},
        "suppressed": by_step.get(len(ladder) + 1, 0),
    }


def _identifiers(ctx: RunContext):
    found = None
    for table in ("silver.patient", "silver.related_person"):
        if ctx.lake.exists(table):
            part = direct_identifiers(ctx.lake.read(ctx.spark, table))
            found = part if found is None else found.unionByName(part)
    if found is None:
        raise ConfigError("the PHI scan needs silver.patient, which does not exist yet: run normalize first")
    return found.distinct()


def _pseudonym_columns(ctx: RunContext, table: str) -> set[str]:
    """Output columns of `table` (``gold.<name>``) that its policy fills with keyed pseudonyms."""
    layer, _, name = table.partition(".")
    lines = ((ctx.config.deid.get("tables") or {}).get(name) or {}).get("columns") or [] if layer == "gold" else []
    return {line.get("as", line["column"]) for line in lines if line.get("action") == "pseudonym"}


def phi_gate(ctx: RunContext, staged: dict[str, object]) -> dict[str, int]:
    """Fail when any staged curated table holds a direct identifier held in silver (names only columns)."""
    from pyspark.sql import functions as F

    # Every table's scan joins the identifiers, which a Python pass over every person resource finds:
    # staged once per call instead of evaluated again for each table.
    identifiers = ctx.lake.materialize(ctx.spark, _identifiers(ctx), "staging.phi_identifiers")
    hits = {}
    for name, df in staged.items():
        pseudonyms = sorted(_pseudonym_columns(ctx, name) & set(df.columns))
        if pseudonyms:
            # A pseudonym is HMAC output: 32 random hex characters, whose digit runs equal some short
            # numeric identifier (an MRN, a phone number's tail) by chance once there are millions of
            # them (1.1 M observations: 2 false hits). Its column is checked for that form instead, which
            # still catches a value that was not pseudonymized.
            bad = df.select(*[F.sum(F.when(~F.col(c).rlike("^[0-9a-f]{32}$"), 1).otherwise(0)).alias(c) for c in pseudonyms]).first()
            hits.update({f"{name}.{c}": bad[c] for c in pseudonyms if bad[c]})
            df = df.drop(*pseudonyms)
        for row in scan(df, identifiers).collect():
            hits[f"{name}.{row['column']}"] = row["hits"]
    if hits:
        where = ", ".join(f"{column} ({n} values)" for column, n in sorted(hits.items()))
        raise PrivacyGateError(f"PHI scan: direct identifiers found in {where}; nothing was published — fix conf/deid.yaml")
    return hits


def publish(ctx: RunContext, staged: dict[str, object]) -> None:
    """Write each staged DataFrame (name -> DataFrame) to its curated table, one Delta commit each."""
    for name, df in staged.items():
        ctx.lake.overwrite(df, name)


def run(ctx: RunContext) -> dict:
    from carelake.dictionary import check_grades
    from carelake.validate import validate

    check_grades(ctx.config, layer="gold")  # before any work: a policy that would publish too much stops here
    counts = build_gold(ctx)
    staged = {f"gold.{name}": ctx.lake.read(ctx.spark, f"staging.gold_{name}") for name in counts}
    result: dict = {"gold": counts}
    kanon = kanon_settings(ctx.config)
    if kanon and f"gold.{kanon['table']}" in staged:
        name = f"gold.{kanon['table']}"
        result["kanon"] = kanon_report(ctx, staged[name])
        staged[name] = staged[name].drop(STEP_COLUMN)
    check_grades(ctx.config, layer="gold", columns={name: df.columns for name, df in staged.items()})
    with ctx.progress.step("curate: PHI scan of staged gold"):
        phi_gate(ctx, staged)
    report = validate(ctx, staged, stage="curate")
    report.raise_if_critical()
    with ctx.progress.step("curate: publish gold"):
        publish(ctx, staged)
    result["verdict"] = report.verdict
    return result
