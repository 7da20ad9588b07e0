"""The verdict (one sentence for every load status) and the console summary's per-reason lines."""

import copy

import pytest

from healthtech_etl.quality import summary_lines, verdict

OFFENDING = {
    "appointments": {
        "booking_date_out_of_range": {
            "count": 329, "column": "booking_date", "first_row": 453, "last_row": 782,
            "top_values": [{"value": "2026-10-24 00:00:00", "count": 1, "first_row": 453, "last_row": 453}],
            "date_range": {"found_min": "2026-10-24", "found_max": "2355-10-24", "allowed_min": "1900-01-01",
                           "allowed_max": "2026-10-01", "pattern": "one year per row, rows 453-782"}},
        "unknown_doctor": {
            "count": 175, "column": "doctor_id", "first_row": 12, "last_row": 840,
            "top_values": [{"value": "105", "count": 175, "first_row": 12, "last_row": 840}],
            "known_doctor_ids": {"count": 5, "min": "100", "max": "104", "basis": "doctors_in_file"}},
        "missing_patient_id": {"count": 3, "column": "patient_id", "first_row": 40, "last_row": 90,
                               "top_values": []},
        "invalid_patient_id": {"count": 2, "column": "patient_id", "first_row": 41, "last_row": 91,
                               "top_values": [{"value": "P-77", "count": 2, "first_row": 41, "last_row": 91}]},
    },
    "doctors": {"missing_name": {"count": 1, "column": "name", "first_row": 4, "last_row": 4, "top_values": []}},
}
REPORT = {
    "run_id": "r1", "as_of": "2025-10-01", "status": "critical", "load_status": "succeeded",
    "metrics": {"acceptance_rate": {"value": 55.41, "threshold": 90.0, "critical_threshold": 75.0,
                                    "alert_when": "below", "status": "critical", "description": "-"}},
    "counts": {"doctors": {"read": 6, "loaded": 5, "rejected": 1},
               "appointments": {"read": 1025, "loaded": 517, "rejected": 508}},
    "rejections": {}, "unknown_status_values": {}, "offending": OFFENDING,
    "inputs": {"doctors": {"file": "doctors.xlsx"}}, "settings": {"fail_on": "critical"},
}
CAUSES = ("booking_date_out_of_range (329 rows: booking dates 2026-10-24 .. 2355-10-24, allowed 1900-01-01 .. "
          "2026-10-01, one year per row, rows 453-782), unknown_doctor (175 rows: doctor_id 105; doctors.xlsx holds "
          "5 ids, 100-104) and missing_patient_id (3 rows: spreadsheet rows 40-90).")


def with_status(load_status, **counts):
    report = copy.deepcopy(REPORT)
    report["load_status"] = load_status
    for entity, values in counts.items():
        report["counts"][entity].update(values)
    return report


@pytest.mark.parametrize("load_status, counts, start", [
    ("succeeded", {}, "Loaded 517 of 1,025 appointments (50.4 %) and 5 of 6 doctors; 509 rows rejected, mostly "),
    ("not_loaded", {}, "Not loaded yet: 517 of 1,025 appointments (50.4 %) and 5 of 6 doctors pass the rules; "
                       "509 rows rejected, mostly "),
    ("gated", {"appointments": {"loaded": 0, "would_load": 517}, "doctors": {"loaded": 0, "would_load": 5}},
     "Nothing loaded: data quality CRITICAL stopped the run (--fail-on critical); 517 of 1,025 appointments "
     "(50.4 %) and 5 of 6 doctors had passed the rules; 509 rows rejected, mostly "),
    ("failed", {}, "Nothing loaded: the load failed and was rolled back; 517 of 1,025 appointments (50.4 %) and "
                   "5 of 6 doctors had passed the rules; 509 rows rejected, mostly "),
])
def test_one_sentence_for_each_load_status(load_status, counts, start):
    sentence = verdict(with_status(load_status, **counts))
    assert sentence == start + CAUSES
    assert "P-77" not in sentence  # patient ids stay out of the verdict (it is on the HTML page)


def test_no_rejection_and_old_reports():
    clean = with_status("succeeded", appointments={"loaded": 1025, "rejected": 0}, doctors={"loaded": 6, "rejected": 0})
    assert verdict(clean) == "Loaded 1,025 of 1,025 appointments (100.0 %) and 6 of 6 doctors; no row was rejected."
    old = {key: value for key, value in REPORT.items() if key not in ("offending", "inputs", "settings")}
    old["rejections"] = {"unknown_doctor": 175, "missing_patient_id": 3}
    assert verdict(old).endswith("mostly unknown_doctor (175 rows) and missing_patient_id (3 rows).")
    assert verdict({}) == "Not loaded yet: 0 of 0 appointments and 0 of 0 doctors pass the rules; no row was rejected."


def test_the_summary_has_the_verdict_then_one_line_per_reason():
    lines = summary_lines(REPORT)
    assert lines[1] == "  " + verdict(REPORT)
    reasons = [line for line in lines if line.startswith(("  appointments ", "  doctors ")) and ":" in line]
    assert [line.split(":")[0].split()[-1] for line in reasons] == [  # in the report's order
        "booking_date_out_of_range", "unknown_doctor", "missing_patient_id", "invalid_patient_id", "missing_name"]
    unknown = next(line for line in reasons if "unknown_doctor" in line)
    assert unknown == ("  appointments unknown_doctor: 175 rows (rows 12-840); doctor_id '105' x175 (rows 12-840); "
                       "doctors.xlsx holds 5 ids, 100-104")


def test_summary_values_are_escaped():
    report = copy.deepcopy(REPORT)
    report["offending"]["appointments"]["unknown_doctor"]["top_values"][0]["value"] = "105\nFAKE LINE"
    report["inputs"]["doctors"]["file"] = "doc\ttors.xlsx"
    lines = summary_lines(report)
    assert all("\n" not in line and "\t" not in line for line in lines)
    assert "'105\\nFAKE LINE' x175" in "\n".join(lines) and "doc\\ttors.xlsx holds" in verdict(report)


def test_scattered_reasons_are_not_called_most():
    report = with_status("succeeded", appointments={"loaded": 1017, "rejected": 8})
    report["offending"] = {"doctors": {"missing_name": OFFENDING["doctors"]["missing_name"]}, "appointments": {
        code: {"count": 1, "column": None, "first_row": row, "last_row": row, "top_values": []}
        for row, code in enumerate(("duplicate_row", "unreadable_row", "missing_booking_id", "invalid_status",
                                    "missing_doctor_id", "duplicate_booking_id", "invalid_booking_id"), start=10)}}
    assert verdict(report).endswith(
        "9 rows rejected for 8 reasons, the most frequent duplicate_row (1 row: spreadsheet row 10), unreadable_row "
        "(1 row: spreadsheet row 11) and missing_booking_id (1 row: spreadsheet row 12).")  # appointments first
