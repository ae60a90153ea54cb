"""State shared by the segment mappings of one message: the hospital, keys and references so far."""

from __future__ import annotations

from dataclasses import dataclass, field

from transforms.hl7v2.parse import Message
from transforms.ids import resource_id
from transforms.terminology import Terminology


@dataclass
class Context:
    message: Message
    hospital: str
    terminology: Terminology
    overrides: dict
    tz: str | None
    resources: list[dict] = field(default_factory=list)
    # Current patient / visit / report, reset by the PID, PV1 and OBR segments that start their groups.
    mrn: str | None = None
    patient_ref: str | None = None
    visit_key: str | None = None
    encounter_ref: str | None = None
    report: dict | None = None
    report_key: str | None = None
    report_status_given: bool = False
    request: dict | None = None  # the ServiceRequest of the current OBR group
    order: object | None = None  # the ORC segment of the current order group
    immunization: dict | None = None  # the RXA a following funding OBX belongs to
    medication: dict | None = None  # the RXE an RXR that follows gives the route of
    rx_order: object | None = None  # the RXO of the current pharmacy order
    document: dict | None = None  # the TXA the OBX of an MDM add content to
    last: dict | None = None  # the resource an NTE that follows attaches to
    _ids: set = field(default_factory=set)

    def rid(self, resource_type: str, local_key: str) -> str:
        return resource_id(self.hospital, resource_type, local_key)

    def add(self, resource: dict) -> dict:
        """Keep a resource. A second Patient with the same id in one message is the same person and
        is merged into the first; any other clash (two OBX with one set id under one order) gets a
        suffixed id, deterministic because segment order is."""
        key = (resource["resourceType"], resource["id"])
        if key in self._ids:
            if resource["resourceType"] == "Patient":
                for existing in self.resources:
                    if (existing["resourceType"], existing["id"]) == key:
                        for k, v in resource.items():
                            existing.setdefault(k, v)
                        return existing
            n = 2
            while (resource["resourceType"], f"{resource['id'][:28]}{n:04d}") in self._ids:
                n += 1
            resource["id"] = f"{resource['id'][:28]}{n:04d}"
            key = (resource["resourceType"], resource["id"])
        self._ids.add(key)
        self.resources.append(resource)
        return resource

    @property
    def context_key(self) -> str:
        """Key of what a clinical fact hangs off: the visit when there is one, else the patient."""
        if self.visit_key:
            return f"visit|{self.visit_key}"
        return f"patient|{self.mrn}"
