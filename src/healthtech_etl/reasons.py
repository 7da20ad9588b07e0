"""Reason codes given to rejected rows (they land in ``etl_rejections`` and the log)."""


MISSING_NAME = "missing_name"
INVALID_NAME = "invalid_name"
INVALID_BOOKING_DATE = "invalid_booking_date"
MISSING_BOOKING_DATE = "missing_booking_date"
BOOKING_DATE_OUT_OF_RANGE = "booking_date_out_of_range"
DUPLICATE_ROW = "duplicate_row"
DUPLICATE_BOOKING_ID = "duplicate_booking_id"
DUPLICATE_DOCTOR_ID = "duplicate_doctor_id"
UNKNOWN_DOCTOR = "unknown_doctor"


def missing(column: str) -> str:
    """Code for an empty mandatory cell, e.g. ``missing_patient_id``."""
    return f"missing_{column}"


def invalid(column: str) -> str:
    """Code for a cell that is present but not a valid value, e.g. ``invalid_booking_id``."""
    return f"invalid_{column}"

