"""Pure transforms of every stage, DataFrame -> DataFrame, and the per-record functions they run."""

from transforms._compiled import install as _install_compiled

_install_compiled()  # the per-record modules as C extensions where bin/setup built them (see the module)
