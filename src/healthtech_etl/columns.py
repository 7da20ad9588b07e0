"""The workbooks' mandatory columns (header names, normalized). A module of its own, with no
imports: the CLI starts reading the appointments before pandas is loaded."""

DOCTOR_COLUMNS = ("doctor_id", "name", "specialty")
APPOINTMENT_COLUMNS = ("booking_id", "patient_id", "doctor_id", "booking_date", "status")
