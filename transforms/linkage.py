"""Person linkage: one person key for all records of a person across hospitals.

Input columns (Patients from silver or from a normalize batch): id, hospital, national_id.
Output columns: hospital, patient_id, person_key, rule.

Rule order (deterministic): a national id links across hospitals; without one, the person key is the
hospital's own Patient, so nothing is linked by guess. Demographic rules come with issue 4.
"""

from __future__ import annotations

from pyspark.sql import functions as F

__all__ = ["person_keys"]


def person_keys(patients):
    """Patients -> (hospital, patient_id, person_key, rule); person_key is 32 hex chars."""
    national = F.trim(F.col("national_id"))
    has_national = national.isNotNull() & (national != F.lit(""))
    key_source = F.when(has_national, F.concat(F.lit("nid|"), national)).otherwise(F.concat(F.lit("pid|"), F.col("id")))
    return patients.select(
        F.col("hospital"),
        F.col("id").alias("patient_id"),
        F.substring(F.sha2(key_source, 256), 1, 32).alias("person_key"),
        F.when(has_national, F.lit("national_id")).otherwise(F.lit("hospital_patient")).alias("rule"),
    )
