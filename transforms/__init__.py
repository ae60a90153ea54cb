"""Pure transforms of every stage, DataFrame -> DataFrame, and the per-record functions they run."""
