"""HL7 v2 throughput: messages/s of split + parse + map + validate, single core.

    python bench/hl7v2_throughput.py [--messages N] [--seed S]

Messages are generated here (half ADT^A01: MSH, EVN, PID, PV1, DG1; half ORU^R01: MSH, PID, PV1,
OBR, 5 x OBX), written into one batch byte string with CR terminators, then timed stage by stage.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.fhir_validate import validate  # noqa: E402
from transforms.hl7v2 import message_to_resources, parse_message, split_messages  # noqa: E402
from transforms.terminology import Terminology  # noqa: E402

_LABS = [("2345-7", "Glucose", "mmol/L"), ("718-7", "Hemoglobin", "g/dL"), ("2160-0", "Creatinine", "umol/L"),
         ("2951-2", "Sodium", "mmol/L"), ("2823-3", "Potassium", "mmol/L")]
_DX = ["E11.9^Type 2 diabetes mellitus", "I10^Essential hypertension", "J18.9^Pneumonia"]


def _pv1(rng: random.Random, n: int) -> str:
    fields = [""] * 46
    fields[1], fields[2], fields[19] = "1", rng.choice("IOE"), f"V{n:07d}"
    fields[44] = f"202401{rng.randint(1, 28):02d}{rng.randint(0, 23):02d}0000+0800"
    return "PV1|" + "|".join(fields[1:])


def _pid(rng: random.Random, n: int) -> str:
    return (f"PID|1||MRN{n % 5000:06d}^^^HOSPA^MR||Name{n}^Given{n}||19{rng.randint(30, 99)}0{rng.randint(1, 9)}15|"
            f"{rng.choice('MF')}|||{n} Main St^^City^^10000{n % 10}^^H")


def generate(count: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        ts = f"202401{rng.randint(1, 28):02d}1030{rng.randint(10, 59)}+0800"
        if n % 2 == 0:
            segs = [f"MSH|^~\\&|HIS|HOSPA|LAKE|REGION|{ts}||ADT^A01^ADT_A01|A{n}|P|2.5.1", f"EVN|A01|{ts}",
                    _pid(rng, n), _pv1(rng, n), f"DG1|1||{rng.choice(_DX)}^I10"]
        else:
            segs = [f"MSH|^~\\&|LIS|HOSPA|LAKE|REGION|{ts}||ORU^R01^ORU_R01|R{n}|P|2.5.1", _pid(rng, n), _pv1(rng, n),
                    f"OBR|1|P{n}|F{n}|24323-8^Metabolic panel^LN|||{ts}"]
            for i, (code, name, unit) in enumerate(_LABS, start=1):
                segs.append(f"OBX|{i}|NM|{code}^{name}^LN||{rng.uniform(1, 200):.1f}|{unit}^^UCUM|1-100|N|||F|||{ts}")
        out.append("\r".join(segs))
    return ("\r".join(out) + "\r").encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data = generate(args.messages, args.seed)
    terminology = Terminology()

    t0 = time.perf_counter()
    texts = split_messages(data)
    t1 = time.perf_counter()
    for text in texts:
        parse_message(text)
    t2 = time.perf_counter()
    mapped = [message_to_resources(text, hospital="HOSPA", terminology=terminology) for text in texts]
    t3 = time.perf_counter()
    resources = 0
    for batch in mapped:
        for resource in batch:
            validate(resource)
            resources += 1
    t4 = time.perf_counter()

    n = len(texts)
    assert n == args.messages, f"split found {n} messages, generated {args.messages}"
    # map includes its own parse (message_to_resources parses again), so end-to-end is split + map + validate.
    total = (t1 - t0) + (t3 - t2) + (t4 - t3)
    print(json.dumps({
        "benchmark": "hl7v2_throughput", "messages": n, "resources": resources, "bytes": len(data),
        "split_msgs_per_s": round(n / (t1 - t0)), "parse_msgs_per_s": round(n / (t2 - t1)),
        "map_msgs_per_s": round(n / (t3 - t2)), "validate_resources_per_s": round(resources / (t4 - t3)),
        "end_to_end_msgs_per_s": round(n / total), "end_to_end_seconds": round(total, 3),
        "python": platform.python_version(), "machine": platform.machine(),
    }))


if __name__ == "__main__":
    main()
