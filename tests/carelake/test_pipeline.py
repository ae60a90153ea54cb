import errno

from carelake.errors import StageFailedError
from carelake.pipeline import AUDIT_SCHEMA, describe_failure


class _EngineError(Exception):
    def getErrorClass(self):
        return "DELTA_WRITE_FAILED"


def test_failure_descriptions_keep_the_class_and_os_condition_but_not_the_text():
    assert describe_failure(OSError(errno.ENOSPC, "No space left on device", "/lake/phi/x")) == "OSError (No space left on device)"
    described = describe_failure(_EngineError("cannot cast 'Jane Doe, 1980-01-01' ... File too large"))
    assert described == "_EngineError [DELTA_WRITE_FAILED] (File too large)"
    assert "Jane" not in describe_failure(ValueError("bad value Jane Doe"))
    # the engine's pool, as Sail words it through Spark Connect (50,000 patients in one run, 1.5 GiB pool)
    pool = describe_failure(_EngineError("Failed to allocate additional 136.0 MB for HashJoinInput[1] with 631.7 MB already "
                                         "allocated for this reservation - 134.4 MB remain available for the total memory pool"))
    assert pool == "_EngineError [DELTA_WRITE_FAILED] (the engine's memory pool is full: raise CARELAKE_ENGINE_MEMORY_MB)"


def test_stage_failures_have_their_own_exit_code_and_the_audit_its_columns():
    assert StageFailedError.exit_code == 8
    names = [name for name, _ in AUDIT_SCHEMA]
    assert {"triggered_by", "user", "inputs", "tables_written", "error_detail", "exit_code"} <= set(names)
