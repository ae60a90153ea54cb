"""The per-record modules compiled to C with mypyc, used only while they match their sources.

The map step spends most of its time in the interpreter: the mappers and the fast validator build and
walk small dicts, one record at a time. mypyc compiles these typed modules to C extensions that do the
same work without the bytecode loop (see docs/performance.md for the measured gain). The sources stay
the code of record: a compiled module is a cache of its source, never edited, and never in the tree.

``bin/setup`` builds them (`build`) into the virtual environment
(``<venv>/carelake-compiled``) with a manifest of each source's SHA-256. `install`, run when the
``transforms`` package is imported (in the client and in every UDF worker), serves them through an
import hook only if the manifest is for this Python and *every* source is unchanged: compiled modules
call each other directly, so a mix of compiled and edited modules would run code that is not in the tree.
Otherwise the package runs from source, as it does where nothing was built; ``CARELAKE_COMPILED=0``
forces that. `status` says which: "compiled", "source (...why)".
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
from pathlib import Path

#: the modules compiled, all or none: the per-record work of the map step (the mappers, the fast validator,
#: the rows). Not what the engine pickles by value for its UDF workers, which compiled code does not
#: survive: transforms.normalize's closures, and the mapping's `Terminology` (a frozen dataclass).
MODULES = (
    "transforms.record_rows", "transforms.csv_feed", "transforms.fhir_feed", "transforms.fast_validate",
    "transforms.fastjson", "transforms.ids", "transforms.systems",
    "transforms.hl7v2._context", "transforms.hl7v2._documents", "transforms.hl7v2._encounter",
    "transforms.hl7v2._immunization", "transforms.hl7v2._medications", "transforms.hl7v2._orders",
    "transforms.hl7v2._patient", "transforms.hl7v2._results", "transforms.hl7v2._scheduling",
    "transforms.hl7v2._zsegments", "transforms.hl7v2.datatypes", "transforms.hl7v2.parse",
    "transforms.hl7v2.to_fhir", "transforms.hl7v2.vocab",
)
BUILD_DIR = Path(sys.prefix) / "carelake-compiled"
_MANIFEST = "manifest.json"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds the transforms package

status = "source (not installed)"


def _source(module: str) -> Path:
    return _SOURCE_ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _digests() -> dict[str, str]:
    return {m: hashlib.sha256(_source(m).read_bytes()).hexdigest() for m in MODULES}


def _abi() -> str:
    return f"{sys.implementation.cache_tag} {sysconfig.get_config_var('EXT_SUFFIX')}"


class _Finder:
    """Serves the built extension of each compiled module (and mypyc's shared library) by name: a meta
    path finder by its `find_spec` (not derived from importlib.abc, whose import was most of the 40 ms
    this module added to every process start, UDF workers included)."""

    def __init__(self, files: dict[str, Path]):
        self.files = files

    def find_spec(self, fullname, path=None, target=None):
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def install() -> str:
    """Serve the compiled modules if they match their sources (see the module docstring); -> `status`."""
    global status
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return status
    status = _install()
    return status


def unused_build() -> bool:
    """A build exists that this process does not run (sources edited since, another Python, files
    missing), though nothing asked for the sources (``CARELAKE_COMPILED=0``)."""
    return (status != "compiled" and os.environ.get("CARELAKE_COMPILED", "1") != "0"
            and (BUILD_DIR / _MANIFEST).is_file())


def _manifest(target: Path) -> dict | None:
    try:
        return json.loads((target / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _mismatch(manifest: dict, sources: dict[str, str]) -> str | None:
    """Why `manifest` is not a build of `sources` for this Python, or None when it is."""
    if manifest.get("abi") != _abi():
        return "built for another Python"
    if manifest.get("sources") != sources:
        return "sources changed since the build"
    return None


def _install() -> str:
    if os.environ.get("CARELAKE_COMPILED", "1") == "0":
        return "source (CARELAKE_COMPILED=0)"
    manifest = _manifest(BUILD_DIR)
    if manifest is None:
        return "source (nothing built: bin/setup builds it)"
    why = _mismatch(manifest, _digests())
    if why:
        return f"source ({why}: run bin/setup)"
    files = {name: BUILD_DIR / file for name, file in manifest["files"].items()}
    if any(name in sys.modules for name in MODULES) or not all(f.is_file() for f in files.values()):
        return "source (incomplete build or modules imported before: run bin/setup)"
    sys.meta_path.insert(0, _Finder(files))
    return "compiled"


def build(target: Path = BUILD_DIR) -> None:
    """Compile `MODULES` with mypyc into `target` (replaced), with the manifest `install` checks.

    mypyc compiles next to the sources, so it runs in a copy of the package; the tree stays clean."""
    import shutil
    import subprocess
    import tempfile

    sources = _digests()
    manifest = _manifest(target)
    if manifest is not None and _mismatch(manifest, sources) is None:
        print("carelake setup: compiled mappers up to date", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory(prefix="carelake-mypyc-") as tmp:
        work = Path(tmp)
        shutil.copytree(_SOURCE_ROOT / "transforms", work / "transforms",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        paths = [str(Path(*m.split(".")).with_suffix(".py")) for m in MODULES]
        command = [sys.executable, "-m", "mypyc", "--ignore-missing-imports", "--follow-imports=silent", *paths]
        done = subprocess.run(command, cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise SystemExit(f"carelake setup: mypyc could not compile the mappers:\n{tail}")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        files = {m: str(Path(*m.split(".")).with_suffix(suffix)) for m in MODULES}
        files.update({p.name[: -len(suffix)]: p.name for p in work.glob(f"*__mypyc{suffix}")})  # the shared library
        if target.exists():
            shutil.rmtree(target)
        for file in files.values():
            (target / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / file, target / file)
    if _digests() != sources:
        raise SystemExit("carelake setup: the sources changed while they were compiled; run bin/setup again")
    (target / _MANIFEST).write_text(json.dumps({"abi": _abi(), "sources": sources, "files": files}, indent=1))
    print(f"carelake setup: compiled {len(MODULES)} mapper modules into {target}", file=sys.stderr)
