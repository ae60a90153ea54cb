from transforms.ids import record_id, record_ids


def test_record_ids_of_one_file_hash_like_record_id():
    of = record_ids("hosp-a", "hl7v2")
    for payload in ["", "MSH|^~\\&|x", "café \u2603", b"utf-8 bytes caf\xc3\xa9"]:
        assert of(payload) == record_id("hosp-a", "hl7v2", payload)
    assert record_ids("hosp-b", "hl7v2")("x") != of("x")
