"""marts: de-identified gold tables -> regional aggregates with small cells suppressed.

Every count between 1 and ``min_cell - 1`` would point at a handful of people, so such a row keeps its
dimensions, gets null counts (and null rates computed from them) and ``suppressed = true``. Zero is
published: it says nobody, which identifies nobody.

Grains are chosen so that a region of some thousand persons still gets published cells: months for
all encounters of a region, quarters once encounters are split by class, years for lab results and
readmissions, 20-year age groups for prevalence (see docs/data-dictionary.md).

`flag_readmissions` is the one transform here that runs before de-identification (in curate): a
30-day readmission needs exact dates, which the curated zone does not hold.
"""

from __future__ import annotations

from pyspark.sql import Window
from pyspark.sql import functions as F

__all__ = [
    "MIN_CELL", "ICD10_CHAPTERS", "AGE_GROUPS", "suppress_small_cells", "icd10_chapter", "age_group", "persons",
    "encounters_by_region_month", "encounters_by_region_quarter_class", "condition_prevalence",
    "lab_abnormal_share", "readmissions_by_region_year", "flag_readmissions",
]

MIN_CELL = 11

#: WHO ICD-10 (2019) chapters: (number, first 3-character code, last, title)
ICD10_CHAPTERS = (
    ("I", "A00", "B99", "Certain infectious and parasitic diseases"),
    ("II", "C00", "D48", "Neoplasms"),
    ("III", "D50", "D89", "Diseases of the blood and blood-forming organs and certain disorders involving the immune mechanism"),
    ("IV", "E00", "E90", "Endocrine, nutritional and metabolic diseases"),
    ("V", "F00", "F99", "Mental and behavioural disorders"),
    ("VI", "G00", "G99", "Diseases of the nervous system"),
    ("VII", "H00", "H59", "Diseases of the eye and adnexa"),
    ("VIII", "H60", "H95", "Diseases of the ear and mastoid process"),
    ("IX", "I00", "I99", "Diseases of the circulatory system"),
    ("X", "J00", "J99", "Diseases of the respiratory system"),
    ("XI", "K00", "K93", "Diseases of the digestive system"),
    ("XII", "L00", "L99", "Diseases of the skin and subcutaneous tissue"),
    ("XIII", "M00", "M99", "Diseases of the musculoskeletal system and connective tissue"),
    ("XIV", "N00", "N99", "Diseases of the genitourinary system"),
    ("XV", "O00", "O99", "Pregnancy, childbirth and the puerperium"),
    ("XVI", "P00", "P96", "Certain conditions originating in the perinatal period"),
    ("XVII", "Q00", "Q99", "Congenital malformations, deformations and chromosomal abnormalities"),
    ("XVIII", "R00", "R99", "Symptoms, signs and abnormal clinical and laboratory findings, not elsewhere classified"),
    ("XIX", "S00", "T98", "Injury, poisoning and certain other consequences of external causes"),
    ("XX", "V01", "Y98", "External causes of morbidity and mortality"),
    ("XXI", "Z00", "Z99", "Factors influencing health status and contact with health services"),
    ("XXII", "U00", "U99", "Codes for special purposes"),
)

#: 20-year age groups; they hold the 5-year age bands of gold.patient and the 20-year bands the
#: k-anonymity ladder generalizes to, so both map to one group.
AGE_GROUPS = ("0-19", "20-39", "40-59", "60-79", "80+")


def suppress_small_cells(df, count_columns: list[str], *, min_cell: int = MIN_CELL, derived: tuple[str, ...] = ()):
    """Null every count (and every `derived` column) of a row where any count lies in 1..min_cell-1;
    add a `suppressed` flag."""
    small = None
    for column in count_columns:
        cond = (F.col(column) >= 1) & (F.col(column) < min_cell)
        small = cond if small is None else (small | cond)
    out = df.withColumn("suppressed", F.coalesce(small, F.lit(False)))
    for column in count_columns:
        out = out.withColumn(column, F.when(F.col("suppressed"), F.lit(None).cast("long")).otherwise(F.col(column)))
    for column in derived:
        out = out.withColumn(column, F.when(F.col("suppressed"), F.lit(None).cast("double")).otherwise(F.col(column)))
    return out


def icd10_chapter(code):
    """Column expression: the chapter number (I..XXII) of an ICD-10 code column, null when none fits."""
    code3 = F.upper(F.substring(code, 1, 3))
    expr = None
    for number, first, last, _ in ICD10_CHAPTERS:
        cond = (code3 >= F.lit(first)) & (code3 <= F.lit(last))
        expr = F.when(cond, F.lit(number)) if expr is None else expr.when(cond, F.lit(number))
    return expr.otherwise(F.lit(None).cast("string"))


def age_group(band):
    """Column expression: "45-49" (or "40-59", "90+") -> one of AGE_GROUPS; null when unknown."""
    low = F.regexp_extract(band, r"^([0-9]+)", 1).cast("int")
    low20 = (F.floor(low / 20) * 20).cast("int")
    return (F.when(low.isNull(), F.lit(None).cast("string"))
            .when(low20 >= 80, F.lit("80+"))
            .otherwise(F.concat(low20.cast("string"), F.lit("-"), (low20 + 19).cast("string"))))


def persons(patient):
    """gold.patient (person_id, region, age_band, gender) -> one row per person: region, age_group, sex.

    A person seen in several hospitals has a row per hospital; the smallest non-null value of each
    attribute is kept, so the choice does not depend on row order. Unknowns become "unknown".
    """
    return patient.groupBy("person_id").agg(
        F.coalesce(F.min("region"), F.lit("unknown")).alias("region"),
        F.coalesce(age_group(F.min("age_band")), F.lit("unknown")).alias("age_group"),
        F.coalesce(F.min("gender"), F.lit("unknown")).alias("sex"),
    )


def _regions(patient):
    """(person_id, hospital, region) of gold.patient, "unknown" when the hospital recorded none."""
    return patient.select("person_id", "hospital", F.coalesce(F.col("region"), F.lit("unknown")).alias("region")) \
        .dropDuplicates(["person_id", "hospital"])


def encounters_by_region_month(encounter, patient, *, min_cell: int = MIN_CELL):
    """Encounters per region and month.

    Input: gold.encounter (person_id, hospital, start_month), gold.patient (person_id, hospital,
    region). Output: region, month, encounters, persons, suppressed.
    The region is the one the hospital recorded for the person; a person without it counts as "unknown".
    """
    joined = encounter.join(_regions(patient), ["person_id", "hospital"], "left")
    counts = (
        joined.filter(F.col("start_month").isNotNull())
        .groupBy(F.coalesce(F.col("region"), F.lit("unknown")).alias("region"), F.col("start_month").alias("month"))
        .agg(F.count(F.lit(1)).alias("encounters"), F.countDistinct("person_id").alias("persons"))
    )
    return suppress_small_cells(counts, ["encounters", "persons"], min_cell=min_cell).orderBy("region", "month")


def encounters_by_region_quarter_class(encounter, patient, *, min_cell: int = MIN_CELL):
    """Encounters per region, quarter and encounter class.

    Input: gold.encounter (person_id, hospital, class, start_month), gold.patient (person_id, hospital,
    region). Output: region, quarter ("2024-Q1"), class, encounters, persons, suppressed.
    """
    month = F.substring("start_month", 6, 2).cast("int")
    quarter = F.concat(F.substring("start_month", 1, 4), F.lit("-Q"), (F.floor((month - 1) / 3) + 1).cast("string"))
    joined = encounter.join(_regions(patient), ["person_id", "hospital"], "left")
    counts = (
        joined.filter(F.col("start_month").isNotNull())
        .groupBy(F.coalesce(F.col("region"), F.lit("unknown")).alias("region"), quarter.alias("quarter"),
                 F.coalesce(F.col("class"), F.lit("unknown")).alias("class"))
        .agg(F.count(F.lit(1)).alias("encounters"), F.countDistinct("person_id").alias("persons"))
    )
    return suppress_small_cells(counts, ["encounters", "persons"], min_cell=min_cell).orderBy("region", "quarter", "class")


def condition_prevalence(condition, patient, *, min_cell: int = MIN_CELL):
    """Persons ever diagnosed with a condition of each ICD-10 chapter, per region, age group and sex.

    Input: gold.condition (person_id, icd10), gold.patient (person_id, region, age_band, gender).
    Output: region, age_group, sex, chapter, chapter_title, persons_with_condition, population,
    prevalence (persons_with_condition / population), suppressed. Every chapter seen anywhere gets a row
    in every population cell, with 0 where nobody there has it. Age is the age at the run's reference date.
    """
    people = persons(patient)
    population = people.groupBy("region", "age_group", "sex").agg(F.count(F.lit(1)).alias("population"))
    diagnosed = (condition.select("person_id", icd10_chapter(F.col("icd10")).alias("chapter"))
                 .filter(F.col("chapter").isNotNull()).distinct()
                 .join(people, "person_id", "inner"))
    cases = diagnosed.groupBy("region", "age_group", "sex", "chapter").agg(F.count(F.lit(1)).alias("persons_with_condition"))
    titles = condition.sparkSession.createDataFrame([(n, t) for n, _, _, t in ICD10_CHAPTERS], "chapter string, chapter_title string")
    chapters = diagnosed.select("chapter").distinct().join(titles, "chapter", "left")
    grid = population.crossJoin(chapters)
    counts = (grid.join(cases, ["region", "age_group", "sex", "chapter"], "left")
              .withColumn("persons_with_condition", F.coalesce(F.col("persons_with_condition"), F.lit(0)).cast("long"))
              .withColumn("population", F.col("population").cast("long"))
              .withColumn("prevalence", F.round(F.col("persons_with_condition") / F.col("population"), 4)))
    out = suppress_small_cells(counts, ["persons_with_condition", "population"], min_cell=min_cell, derived=("prevalence",))
    return out.select("region", "age_group", "sex", "chapter", "chapter_title", "persons_with_condition", "population",
                      "prevalence", "suppressed").orderBy("region", "age_group", "sex", "chapter")


def lab_abnormal_share(observation, *, top: int = 10, min_cell: int = MIN_CELL):
    """Share of abnormal results per year for the `top` most frequent LOINC codes that carry a flag.

    Input: gold.observation (person_id, loinc, interpretation, effective_month). Only results with an
    interpretation count; abnormal is any interpretation other than N (normal).
    Output: loinc, year, results, abnormal, persons, abnormal_share, suppressed.
    """
    flagged = observation.filter(F.col("loinc").isNotNull() & F.col("interpretation").isNotNull()
                                 & F.col("effective_month").isNotNull())
    common = (flagged.groupBy("loinc").agg(F.count(F.lit(1)).alias("_n"))
              .orderBy(F.col("_n").desc(), F.col("loinc")).limit(top).select("loinc"))
    counts = (flagged.join(common, "loinc", "inner")
              .groupBy("loinc", F.substring("effective_month", 1, 4).alias("year"))
              .agg(F.count(F.lit(1)).alias("results"),
                   F.sum(F.when(F.col("interpretation") != F.lit("N"), 1).otherwise(0)).cast("long").alias("abnormal"),
                   F.countDistinct("person_id").alias("persons"))
              .withColumn("abnormal_share", F.round(F.col("abnormal") / F.col("results"), 4)))
    out = suppress_small_cells(counts, ["results", "abnormal", "persons"], min_cell=min_cell, derived=("abnormal_share",))
    return out.select("loinc", "year", "results", "abnormal", "persons", "abnormal_share", "suppressed").orderBy("loinc", "year")


def readmissions_by_region_year(encounter, patient, *, min_cell: int = MIN_CELL):
    """Inpatient stays and 30-day readmissions per region and year of discharge.

    Input: gold.encounter (person_id, hospital, end_month, readmitted_30d: null for anything but an
    ended inpatient stay), gold.patient (person_id, hospital, region).
    Output: region, year, stays, readmissions, readmission_rate, suppressed.
    """
    stays = encounter.filter(F.col("readmitted_30d").isNotNull() & F.col("end_month").isNotNull())
    joined = stays.join(_regions(patient), ["person_id", "hospital"], "left")
    counts = (joined.groupBy(F.coalesce(F.col("region"), F.lit("unknown")).alias("region"),
                             F.substring("end_month", 1, 4).alias("year"))
              .agg(F.count(F.lit(1)).alias("stays"),
                   F.sum(F.when(F.col("readmitted_30d"), 1).otherwise(0)).cast("long").alias("readmissions"))
              .withColumn("readmission_rate", F.round(F.col("readmissions") / F.col("stays"), 4)))
    out = suppress_small_cells(counts, ["stays", "readmissions"], min_cell=min_cell, derived=("readmission_rate",))
    return out.select("region", "year", "stays", "readmissions", "readmission_rate", "suppressed").orderBy("region", "year")


def flag_readmissions(encounter, *, days: int = 30, inpatient: str = "IMP", column: str = "readmitted_30d"):
    """View rows of encounters -> the same rows plus `column` (boolean).

    Input: the encounter view's rows (person_key, class, start, end: dateTimes). Output: the input
    columns plus `column`: for an inpatient stay with an end, whether the same person (any hospital) was
    admitted as an inpatient again within `days` days of the discharge; null for any other encounter.
    """
    start = F.to_date(F.substring("start", 1, 10))
    end = F.to_date(F.substring("end", 1, 10))
    stays = encounter.filter((F.col("class") == F.lit(inpatient)) & F.col("start").isNotNull() & F.col("person_key").isNotNull())
    order = Window.partitionBy("person_key").orderBy(start, F.col("start"), F.col("hospital"), F.col("id"))
    flagged = (stays.withColumn("_next", F.lead(start).over(order))
               .withColumn("_gap", F.datediff(F.col("_next"), end))
               .select("hospital", "id", F.when(end.isNull(), F.lit(None).cast("boolean"))
                       .otherwise(F.coalesce((F.col("_gap") >= 0) & (F.col("_gap") <= days), F.lit(False))).alias(column)))
    return encounter.join(flagged, ["hospital", "id"], "left")
