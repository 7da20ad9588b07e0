import pandas as pd
import pytest

from healthtech_etl.clean import clean_text, normalize_status, title_case


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("confirmed", "confirmed"), ("Confirmed", "confirmed"), (" CONFIRMED ", "confirmed"),
        ("confirmed!", "confirmed"), ("Confirm", "confirmed"), ("cancelled", "cancelled"),
        ("Canceled", "cancelled"), ("CANCEL-LED", "cancelled"), ("cancel", "cancelled"),
        ("pending", "unknown"), ("no show", "unknown"), ("", "unknown"), (None, "unknown"),
        ("unconfirmed", "unknown"), ("12", "unknown"),
    ],
)
def test_status_normalisation(raw, expected):
    assert normalize_status(pd.Series([raw], dtype=object)).tolist() == [expected]


def test_names_are_trimmed_collapsed_and_nfc_normalised():
    decomposed = "Jose\u0301"  # 'e' + combining acute accent
    cleaned = clean_text(pd.Series(["  Dr.   Ana\tGarcía ", decomposed, "   ", None], dtype=object)).tolist()
    assert cleaned[0] == "Dr. Ana García"
    assert cleaned[1] == "José" and len(cleaned[1]) == 4  # composed, accent kept
    assert cleaned[2] is None and cleaned[3] is None


def test_specialty_title_case_and_empty_to_null():
    assert title_case(pd.Series([" cardiology", "GENERAL   practice", "", None], dtype=object)).tolist() == [
        "Cardiology", "General Practice", None, None,
    ]
