"""Feeds that do not arrive as files in landing: SQL databases (`jdbc`), FHIR servers (`fhir_rest`)."""
