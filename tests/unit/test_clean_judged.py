"""clean.judge_distinct made ahead (the early read's child judges the distinct values it read,
see dense_read) gives the cleaner exactly what it computes itself: value by value, for any
first part of the distinct values, with the rest judged here; and a judgement made with another
``day_first`` is not used."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthtech_etl import clean
from healthtech_etl.sheet_scan import NOT_A_VALUE

COLUMNS = clean.APPOINTMENT_COLUMNS
AS_OF = dt.date(2025, 11, 1)

texts = st.one_of(
    st.none(),
    st.sampled_from(["104", " 34 ", "104.0", "37X", "", "  ", "0", "9007199254740993", "1E+20", NOT_A_VALUE + "#N/A",
                     "2025-10-21", "10/21/2025 09:30", "21/10/2025", "2025-10-21 09:30:00.5", "45950.5", "-3",
                     "Confirmed", "cancel-led", "x\x00y", "Zoë", "x" * 40_000]),
    st.text(alphabet="0123456789-/: .TeE+xX", max_size=20),
)


def codes_and_distinct(cells: list) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(pd.Series(cells, dtype=object))
    distinct = np.append(uniques.astype(object), np.array([None], dtype=object))
    return np.where(codes < 0, len(distinct) - 1, codes).astype(np.int32), distinct


def outcome(result: clean.CleanResult) -> tuple:
    rejected = result.rejected.astype(object).where(result.rejected.notna(), None)
    return result.valid.values.tolist(), rejected.values.tolist(), result.stats, result.unknown_statuses


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(texts, min_size=1, max_size=40), st.booleans(), st.data())
def test_a_judgement_made_ahead_for_any_first_part_is_the_same(cells, day_first, data):
    distinct = pd.Series(pd.unique(pd.Series(cells, dtype=object)), dtype=object)
    for column in COLUMNS:
        whole = clean.judge_distinct(column, distinct, day_first)
        count = data.draw(st.integers(0, len(distinct)), label=f"{column} judged ahead")
        ahead = clean.judge_distinct(column, distinct.iloc[:count].reset_index(drop=True), day_first)
        merged = clean._judgement(column, distinct, day_first, (day_first, {column: (count, ahead)}))
        assert merged.keys() == whole.keys()
        for name in whole:
            assert np.asarray(merged[name]).tolist() == np.asarray(whole[name]).tolist(), (column, name)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(*[texts] * 5), min_size=1, max_size=30), st.booleans(), st.data())
def test_the_cleaner_gives_the_same_result_with_a_judgement_made_ahead(rows, day_first, data):
    raw = pd.DataFrame(rows, columns=list(COLUMNS), dtype=object)
    raw["source_row"] = np.arange(2, 2 + len(raw))
    encoded = {column: codes_and_distinct(raw[column].tolist()) for column in COLUMNS}
    judged = {}
    for column, (_, distinct) in encoded.items():
        count = data.draw(st.integers(0, len(distinct)), label=f"{column} judged ahead")
        judged[column] = (count, clean.judge_distinct(column, pd.Series(distinct[:count], dtype=object), day_first))
    plain = clean.clean_appointments(raw, np.array([1, 104]), AS_OF, day_first=day_first, horizon_days=3_000_000)
    ahead = clean.clean_appointments(raw, np.array([1, 104]), AS_OF, day_first=day_first, horizon_days=3_000_000,
                                     encoded=encoded, judged=(day_first, judged))
    assert outcome(ahead) == outcome(plain)


def test_a_judgement_with_another_day_first_is_not_used():
    raw = pd.DataFrame([["1", "2", "1", "03/04/2025", "confirmed"]], columns=list(COLUMNS), dtype=object)
    raw["source_row"] = [2]
    encoded = {column: codes_and_distinct(raw[column].tolist()) for column in COLUMNS}
    wrong = {column: (len(distinct) - 1, clean.judge_distinct(column, pd.Series(distinct[:-1], dtype=object), False))
             for column, (_, distinct) in encoded.items()}
    result = clean.clean_appointments(raw, np.array([1]), AS_OF, day_first=True, encoded=encoded, judged=(False, wrong))
    assert clean.micros_to_datetime64(result.valid["booking_date"].to_numpy())[0] == np.datetime64("2025-04-03")


@settings(max_examples=100, deadline=None)
@given(st.lists(texts, min_size=1, max_size=30))
def test_ids_judged_from_their_arrow_array_are_the_same(cells):
    pyarrow = pytest.importorskip("pyarrow")
    distinct = pd.Series(pd.unique(pd.Series(cells, dtype=object)), dtype=object)
    try:
        arrow = pyarrow.array(distinct.to_numpy(dtype=object), type=pyarrow.string(), from_pandas=True)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, UnicodeEncodeError):
        return
    plain = clean.judge_distinct("booking_id", distinct)
    given_arrow = clean.judge_distinct("booking_id", distinct, arrow=arrow)
    assert {k: np.asarray(v).tolist() for k, v in given_arrow.items()} == {k: np.asarray(v).tolist() for k, v in plain.items()}
