"""carelake's error hierarchy: one base class, a subclass per thing a user must fix."""

from __future__ import annotations

__all__ = ["CarelakeError", "ConfigError", "KeyMissingError", "QualityGateError", "EngineError", "PrivacyGateError",
           "LandingFileError", "WriteConflictError", "StageFailedError"]


class CarelakeError(Exception):
    """Base of every error carelake raises on purpose; the CLI prints its message and exits 2."""

    exit_code = 2


class ConfigError(CarelakeError):
    """A file in conf/ is missing, malformed or inconsistent."""


class KeyMissingError(CarelakeError):
    """The de-identification key is absent or too weak: no key, no run."""

    exit_code = 3


class EngineError(CarelakeError):
    """No Spark session could be had with the configured engine."""


class QualityGateError(CarelakeError):
    """A critical expectation failed: this run's curated tables were not published."""

    exit_code = 4


class PrivacyGateError(CarelakeError):
    """The PHI scan found identifying data bound for the curated zone: nothing was published."""

    exit_code = 5


class LandingFileError(CarelakeError):
    """A landing file was refused (too big, unreadable): the ingest stopped before any write."""

    exit_code = 6


class WriteConflictError(CarelakeError):
    """A write kept losing concurrent Delta commits after every retry."""

    exit_code = 7


class StageFailedError(CarelakeError):
    """A stage failed on something other than a carelake check (disk full, engine crash); the tables
    committed before stay as they were and a rerun resumes."""

    exit_code = 8
