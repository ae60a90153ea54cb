"""marts runner: published gold -> regional marts, PHI-scanned and validated before they are published."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from carelake.context import RunContext
from carelake.curate import phi_gate, publish
from transforms import marts as m

__all__ = ["run", "MARTS", "Mart"]


@dataclass(frozen=True)
class Mart:
    """One regional mart: what it needs, how it is built, and what its columns mean (for the dictionary)."""

    needs: tuple[str, ...]
    build: Callable[[dict], object]
    description: str
    columns: dict[str, str] = field(default_factory=dict)


_SUPPRESSED = "True when a count of the row lay between 1 and 10: its counts (and rates) are then null."
_REGION = "Region of conf/regions.yaml (from the postal code the hospital recorded); \"unknown\" when none."

#: mart name -> its definition; every mart needs a suite expectations/marts.<name>.json
MARTS = {
    "encounters_by_region_month": Mart(
        ("encounter", "patient"), lambda g: m.encounters_by_region_month(g["encounter"], g["patient"]),
        "Encounters per region and month (all classes).",
        {"region": _REGION, "month": "Month the encounter began (YYYY-MM).",
         "encounters": "Encounters begun in the month.", "persons": "Distinct persons with such an encounter.",
         "suppressed": _SUPPRESSED}),
    "encounters_by_region_quarter_class": Mart(
        ("encounter", "patient"), lambda g: m.encounters_by_region_quarter_class(g["encounter"], g["patient"]),
        "Encounters per region, quarter and encounter class. Quarters, because by month and class most cells "
        "of a region hold fewer than 11 persons.",
        {"region": _REGION, "quarter": "Quarter the encounter began (YYYY-Qn).",
         "class": "Encounter class, v3 ActCode: IMP inpatient, AMB ambulatory, EMER emergency.",
         "encounters": "Encounters begun in the quarter.", "persons": "Distinct persons with such an encounter.",
         "suppressed": _SUPPRESSED}),
    "condition_prevalence": Mart(
        ("condition", "patient"), lambda g: m.condition_prevalence(g["condition"], g["patient"]),
        "Persons ever diagnosed with a condition of each ICD-10 chapter, per region, 20-year age group and sex, "
        "over all the data held. 20-year groups, because 5-year bands leave almost every cell below 11 persons.",
        {"region": _REGION, "age_group": "Age group at the run's reference date: 0-19, 20-39, 40-59, 60-79, 80+, or unknown.",
         "sex": "Administrative gender (male, female, other, unknown).",
         "chapter": "ICD-10 chapter number (I..XXII, WHO 2019).", "chapter_title": "ICD-10 chapter title.",
         "persons_with_condition": "Persons of the cell with at least one diagnosis in the chapter.",
         "population": "Persons of the cell (region, age group, sex) in gold.patient.",
         "prevalence": "persons_with_condition / population, 4 decimals.", "suppressed": _SUPPRESSED}),
    "lab_abnormal_share": Mart(
        ("observation",), lambda g: m.lab_abnormal_share(g["observation"]),
        "Share of abnormal results per year for the 10 most frequent LOINC codes that carry an interpretation "
        "flag. By year, since by month most cells hold fewer than 11 persons.",
        {"loinc": "LOINC code of the test.", "year": "Year of the result (YYYY).",
         "results": "Results with an interpretation flag.", "abnormal": "Results flagged other than N (normal).",
         "persons": "Distinct persons with such a result.", "abnormal_share": "abnormal / results, 4 decimals.",
         "suppressed": _SUPPRESSED}),
    "readmissions_by_region_year": Mart(
        ("encounter", "patient"), lambda g: m.readmissions_by_region_year(g["encounter"], g["patient"]),
        "Inpatient stays and 30-day readmissions (any hospital of the region) per region and year of discharge. "
        "By year: readmissions are rare, so months would be suppressed throughout.",
        {"region": _REGION, "year": "Year of discharge (YYYY).", "stays": "Inpatient stays that ended in the year.",
         "readmissions": "Stays followed by another inpatient admission of the same person within 30 days.",
         "readmission_rate": "readmissions / stays, 4 decimals.", "suppressed": _SUPPRESSED}),
}


def run(ctx: RunContext) -> dict:
    from carelake.validate import validate

    lake, spark = ctx.lake, ctx.spark
    needed = sorted({name for mart in MARTS.values() for name in mart.needs})
    gold = {name: lake.read(spark, f"gold.{name}") for name in needed if lake.exists(f"gold.{name}")}
    counts, skipped = {}, {}
    for name, mart in MARTS.items():
        missing = [t for t in mart.needs if t not in gold]
        if missing:
            skipped[name] = f"gold.{', gold.'.join(missing)} not published yet"
            continue
        with ctx.progress.step(f"marts: {name}") as note:
            counts[name] = lake.materialize(spark, mart.build(gold), f"staging.marts_{name}").count()
            note["detail"] = f"{counts[name]} rows"
    if not counts:
        return {"marts": {}, "skipped": skipped}
    staged = {f"marts.{name}": lake.read(spark, f"staging.marts_{name}") for name in counts}
    with ctx.progress.step("marts: PHI scan of staged marts"):
        phi_gate(ctx, staged)
    report = validate(ctx, staged, stage="marts", id_column=None)
    report.raise_if_critical()
    with ctx.progress.step("marts: publish"):
        publish(ctx, {f"marts.{name}": df for name, df in zip(counts, staged.values())})
    result = {"marts": counts, "verdict": report.verdict}
    if skipped:
        result["skipped"] = skipped
    return result
