"""`carelake convert`: turn source files into FHIR Bundles on disk, without a lake or an engine.

For trying a hospital's feed before declaring it in ``conf/``, and for sending a converted message to
someone who asked "what does carelake make of this?". The mapping is the one the pipeline uses
(`transforms.hl7v2`), and every resource is validated as in normalize, so what converts here converts
there; what does not gets one line in ``quarantine.jsonl`` with the same code and reason.

Outputs (in ``--out``): ``<stem>.json`` for a file holding one message, ``<stem>-<n>.json`` (n from 1,
the message's position in the file) when it holds several; files found inside a folder keep their
sub-folder under ``--out``. Bundles are of type ``collection``; entries have ``urn:uuid:`` full URLs
made from the resource ids (32 hex digits), and references inside the Bundle point at them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import click

__all__ = ["convert", "convert_hl7v2_files", "ConvertSummary", "bundle_of", "hospital_of"]

#: Suffixes picked up inside folders; a file named explicitly is read whatever its name.
HL7_SUFFIXES = (".hl7", ".txt")
QUARANTINE_FILE = "quarantine.jsonl"
_HOSPITAL_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class ConvertSummary:
    files: int = 0
    messages: int = 0
    converted: int = 0
    quarantined: int = 0
    written: list[Path] = field(default_factory=list)

    def line(self) -> str:
        return (f"files: {self.files}, messages: {self.messages}, converted: {self.converted}, "
                f"quarantined: {self.quarantined}")


def _uuid(hex32: str) -> str:
    h = hex32.lower()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _full_url(resource: dict) -> str:
    rid = resource["id"]
    if re.fullmatch(r"[0-9a-f]{32}", rid):
        return _uuid(rid)
    # Ids that are not ours (none today) still get a stable uuid.
    return _uuid(hashlib.sha256(f"{resource['resourceType']}/{rid}".encode()).hexdigest())


def _rewrite_refs(node, urls: dict[str, str]):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v in urls:
                out[k] = urls[v]
            else:
                out[k] = _rewrite_refs(v, urls)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(x, urls) for x in node]
    return node


def bundle_of(resources: list[dict], *, bundle_id: str, timestamp: str | None = None) -> dict:
    """A ``collection`` Bundle of `resources`; ``Type/id`` references to entries become their fullUrl."""
    urls = {f"{r['resourceType']}/{r['id']}": _full_url(r) for r in resources}
    bundle: dict = {"resourceType": "Bundle", "id": bundle_id, "type": "collection"}
    if timestamp:
        bundle["timestamp"] = timestamp
    bundle["entry"] = [
        {"fullUrl": urls[f"{r['resourceType']}/{r['id']}"], "resource": _rewrite_refs(r, urls)} for r in resources
    ]
    return bundle


def hospital_of(message) -> str:
    """Hospital id from MSH-4 (namespace, else universal id), as a safe token; "adhoc" when empty."""
    msh4 = message.msh.field(4)
    raw = msh4.component(1).strip() or msh4.component(2).strip()
    token = _HOSPITAL_SAFE.sub("-", raw).strip("-.")[:64]
    return token or "adhoc"


def _collect(paths: tuple[Path, ...]) -> list[tuple[Path, Path]]:
    """(file, output path relative to --out without suffix), sorted, each file once."""
    out: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for given in paths:
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in HL7_SUFFIXES)
            pairs = [(p, p.relative_to(given).with_suffix("")) for p in found]
        else:
            pairs = [(given, Path(given.stem))]
        for path, rel in pairs:
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                out.append((path, rel))
    return out


def _unique(rel: Path, claimed: set[Path]) -> Path:
    # Two explicit files with one stem (a/x.hl7, b/x.hl7) must not overwrite each other.
    candidate, k = rel, 2
    while candidate in claimed:
        candidate = rel.with_name(f"{rel.name}~{k}")
        k += 1
    claimed.add(candidate)
    return candidate


def _convert_message(text: str, *, hospital: str | None, terminology, overrides: dict) -> tuple[list[dict], dict]:
    from transforms.fhir_validate import validate
    from transforms.hl7v2 import message_to_resources, parse_message
    from transforms.hl7v2 import datatypes as dt
    from transforms.errors import RecordError

    message = parse_message(text)
    hosp = hospital or hospital_of(message)
    resources = message_to_resources(text, hospital=hosp, terminology=terminology, overrides=overrides)
    for resource in resources:
        validate(resource)
    try:
        timestamp = dt.fhir_instant(message.msh.field(7).value, "MSH-7", overrides.get("timezone"))
    except RecordError:
        timestamp = None  # the Bundle's own time is a convenience, not worth losing the message for
    bundle_id = hashlib.sha256(f"{hosp}\x1f{text}".encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return resources, bundle_of(resources, bundle_id=bundle_id, timestamp=timestamp)


def convert_hl7v2_files(
    paths: list[Path] | tuple[Path, ...], out: Path, *, hospital: str | None = None, terminology=None,
    overrides: dict | None = None,
) -> ConvertSummary:
    """Convert HL7 v2 files (or folders of them) to Bundles in `out`; see the module docstring."""
    from transforms.errors import RecordError
    from transforms.terminology import Terminology

    terminology = terminology if terminology is not None else Terminology()
    overrides = dict(overrides or {})
    out.mkdir(parents=True, exist_ok=True)
    summary = ConvertSummary()
    claimed: set[Path] = set()
    with open(out / QUARANTINE_FILE, "w", encoding="utf-8") as quarantine:

        def reject(path: Path, index: int, code: str, reason: str) -> None:
            summary.quarantined += 1
            quarantine.write(json.dumps({"file": str(path), "message": index, "code": code, "reason": reason}) + "\n")

        for path, rel in _collect(tuple(paths)):
            summary.files += 1
            rel = _unique(rel, claimed)
            n, error = 0, None
            messages = _messages_of(path)
            try:
                text = next(messages, None)
            except _Unreadable as exc:
                text, error = None, exc
            while text is not None:
                try:
                    following = next(messages, None)  # one ahead: a file of one message names its Bundle <stem>
                except _Unreadable as exc:  # the message in hand is converted all the same
                    following, error = None, exc
                n += 1
                name = rel.name if n == 1 and following is None and error is None else f"{rel.name}-{n}"
                summary.messages += 1
                try:
                    _, bundle = _convert_message(text, hospital=hospital, terminology=terminology, overrides=overrides)
                except RecordError as exc:
                    reject(path, n, exc.code, exc.reason)
                except Exception as exc:  # noqa: BLE001 - one bad message must not stop the others
                    reject(path, n, "MAPPING_BUG", f"{type(exc).__name__} while mapping")
                else:
                    target = out / rel.parent / f"{name}.json"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(json.dumps(bundle, ensure_ascii=False, indent=1), encoding="utf-8")
                    summary.converted += 1
                    summary.written.append(target)
                text = following
            if error is not None:  # the line names the first message not read (0: none was)
                reject(path, n + 1 if n else 0, "PARSE", f"file could not be read{f' after message {n}' if n else ''} ({error})")
            elif n == 0:
                reject(path, 0, "PARSE", "file holds no HL7 v2 message")
    return summary


class _Unreadable(Exception):
    """Reading a file failed (the OSError's class name is the message: a path may name a person)."""


def _messages_of(path: Path):
    """The message texts of an HL7 v2 file, read in blocks (a batch file may be gigabytes)."""
    from transforms.hl7v2 import split_file_messages

    try:
        with open(path, "rb") as handle:
            yield from split_file_messages(handle)
    except OSError as exc:  # the consumer's own errors never come in here: only reading's
        raise _Unreadable(type(exc).__name__) from exc


def _terminology(conf: Path | None):
    from transforms.terminology import Terminology

    if conf is None:
        return Terminology()
    files = sorted((conf / "terminology").glob("*.csv"))
    if not files:
        raise click.BadParameter(f"no terminology maps in {conf / 'terminology'} (expected *.csv)", param_hint="--conf")
    return Terminology.from_csv_files(files)


@click.group("convert")
def convert() -> None:
    """Convert source files to FHIR R4 Bundles (no lake, no engine)."""


@convert.command("hl7v2")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the Bundles and quarantine.jsonl (created if missing).")
@click.option("--hospital", default=None, help="Hospital id for the ids and local code systems "
              "(default: MSH-4 of each message, else 'adhoc').")
@click.option("--timezone", default=None, metavar="+HH:MM",
              help="Offset of times sent without one (default: such times are kept as dates).")
@click.option("--conf", "conf_dir", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Conf folder whose terminology/*.csv maps local codes (default: no maps).")
@click.option("--keep-unidentified", is_flag=True, default=False,
              help="Keep patients without PID-3 (keyed by their PID) instead of quarantining the message.")
def convert_hl7v2(paths, out_dir, hospital, timezone, conf_dir, keep_unidentified):
    """Convert HL7 v2 files (or folders: *.hl7, *.txt, recursively) to one Bundle per message.

    Messages that cannot be converted are listed in OUT/quarantine.jsonl; the exit code is 0 whatever
    was quarantined.
    """
    overrides: dict = {}
    if timezone is not None:
        if not re.fullmatch(r"[+-](0\d|1[0-4]):[0-5]\d", timezone):
            raise click.BadParameter(f"expected an offset like +08:00, got {timezone!r}", param_hint="--timezone")
        overrides["timezone"] = timezone
    if keep_unidentified:
        overrides["missing_mrn"] = "keep"
    summary = convert_hl7v2_files(paths, out_dir, hospital=hospital, terminology=_terminology(conf_dir),
                                  overrides=overrides)
    click.echo(f"{summary.line()} -> {out_dir}")
    if summary.quarantined:
        click.echo(f"quarantine: {out_dir / QUARANTINE_FILE}", err=True)
