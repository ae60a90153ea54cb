"""curate runner: silver -> de-identified gold, held in staging until the PHI scan and the critical
expectations pass, then published to the curated zone. A blocked run leaves the last good release."""

from __future__ import annotations

from carelake.context import RunContext
from carelake.errors import ConfigError, PrivacyGateError
from carelake.keys import deid_key
from transforms.deid import Policy, deidentify
from transforms.normalize import RESOURCE_TABLES
from transforms.phi_scan import direct_identifiers, scan
from transforms.views import apply_view

__all__ = ["run", "deid_policy", "build_gold", "publish"]


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
    )


def _silver_table(view: dict, name: str) -> str:
    resource = view.get("resource")
    if resource not in RESOURCE_TABLES:
        raise ConfigError(f"conf/views/{name}.json: resource {resource!r} has no silver table")
    return f"silver.{RESOURCE_TABLES[resource]}"


def build_gold(ctx: RunContext) -> dict[str, int]:
    """Evaluate each policy table's view over silver, de-identify, write to staging; rows per table."""
    lake, spark = ctx.lake, ctx.spark
    policy = deid_policy(ctx.config, ctx.as_of)
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
            flat = apply_view(lake.read(spark, silver_table), view)
            lake.overwrite(deidentify(flat, table_policy, policy), f"staging.gold_{name}")
            counts[name] = lake.read(spark, f"staging.gold_{name}").count()
            note["detail"] = f"{counts[name]} rows"
    return counts


def phi_gate(ctx: RunContext, staged: dict[str, object]) -> dict[str, int]:
    """Fail when any staged curated table holds a direct identifier from silver.patient."""
    identifiers = direct_identifiers(ctx.lake.read(ctx.spark, "silver.patient"))
    hits = {}
    for name, df in staged.items():
        for row in scan(df, identifiers).collect():
            hits[f"{name}.{row['column']}"] = row["hits"]
    if hits:
        where = ", ".join(f"{column} ({n} values)" for column, n in sorted(hits.items()))
        raise PrivacyGateError(f"PHI scan: direct identifiers found in {where}; nothing was published — fix conf/deid.yaml")
    return hits


def publish(ctx: RunContext, names: list[str], prefix: str) -> None:
    """Copy staged tables to the curated zone (one Delta commit per table)."""
    for name in names:
        ctx.lake.overwrite(ctx.lake.read(ctx.spark, f"staging.{prefix}_{name}"), f"{prefix}.{name}")


def run(ctx: RunContext) -> dict:
    from carelake.validate import validate

    counts = build_gold(ctx)
    staged = {f"gold.{name}": ctx.lake.read(ctx.spark, f"staging.gold_{name}") for name in counts}
    with ctx.progress.step("curate: PHI scan of staged gold"):
        phi_gate(ctx, staged)
    report = validate(ctx, staged, stage="curate")
    report.raise_if_critical()
    with ctx.progress.step("curate: publish gold"):
        publish(ctx, list(counts), "gold")
    return {"gold": counts, "verdict": report.verdict}
