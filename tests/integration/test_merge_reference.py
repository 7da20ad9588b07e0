"""Differential test: random sequences of replace and merge runs through the real CLI and
PostgreSQL, against a plain Python model of the documented semantics (tables and history)."""

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest
from helpers import APPOINTMENTS_HEADER, AS_OF, DOCTORS_HEADER, fetch

STATUSES = ("confirmed", "cancelled")
DAYS = (dt.datetime(2025, 10, 1, 9, 0), dt.datetime(2025, 10, 2, 9, 0), dt.datetime(2025, 10, 3, 14, 30))
NAMES = ("Dr. A", "Dr. B")


@dataclass
class Model:
    """The reference: dicts and lists, one row at a time, exactly as the README describes merge."""

    doctors: dict = field(default_factory=dict)
    appointments: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # [booking, values, from_step, to_step, run_step]
    last: Optional[tuple] = None  # (mode, step) of the last successful run

    def run(self, step: int, mode: str, doctors: list, appointments: list) -> None:
        known = {row[0] for row in doctors} | (set(self.doctors) if mode == "merge" else set())
        valid = [row for row in appointments if row[2] in known]
        if mode == "replace":
            self.doctors = {row[0]: row[1:] for row in doctors}
            self.appointments = {row[0]: row[1:] for row in valid}
        else:
            if self.last is None or self.last[0] != "merge":
                since = step if self.last is None else self.last[1]
                for version in self.history:
                    if version[3] is None and self.appointments.get(version[0]) != version[1]:
                        version[3] = since
                opened = {version[0] for version in self.history if version[3] is None}
                for booking, values in self.appointments.items():
                    if booking not in opened:
                        self.history.append([booking, values, since, None, since])
            for row in doctors:
                self.doctors[row[0]] = row[1:]
            for row in valid:
                booking, values = row[0], row[1:]
                if self.appointments.get(booking) == values:
                    continue
                for version in self.history:
                    if version[0] == booking and version[3] is None:
                        version[3] = step
                self.history.append([booking, values, step, None, step])
                self.appointments[booking] = values
        self.last = (mode, step)


def random_run(rng: random.Random) -> tuple:
    mode = "merge" if rng.random() < 0.7 else "replace"
    doctors = [(doctor, rng.choice(NAMES), rng.choice(("Cardiology", None)))
               for doctor in sorted(rng.sample(range(1, 6), rng.randint(1, 4)))]
    appointments = [(booking, rng.randint(1, 3), rng.randint(1, 6), rng.choice(DAYS), rng.choice(STATUSES))
                    for booking in sorted(rng.sample(range(1, 16), rng.randint(3, 10)))]
    return mode, doctors, appointments


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_runs_match_the_reference_model(seed, run_cli, make_xlsx, db_config):
    rng = random.Random(seed)
    model = Model()
    for step in range(7):
        mode, doctors, appointments = random_run(rng)
        files = (make_xlsx(f"d{step}.xlsx", DOCTORS_HEADER, doctors),
                 make_xlsx(f"a{step}.xlsx", APPOINTMENTS_HEADER, appointments))
        assert run_cli("etl", "--doctors", str(files[0]), "--appointments", str(files[1]), "--as-of", AS_OF,
                       "--mode", mode) == 0
        model.run(step, mode, doctors, appointments)

        # Every row is of the one source these runs name (the default one); the key column comes last.
        doctors, appointments = (fetch(db_config, f"SELECT * FROM healthtech.{table}") for table in ("doctors", "appointments"))
        assert {row[-1] for row in doctors + appointments} <= {"default"}
        assert {row[0]: tuple(row[1:-1]) for row in doctors} == model.doctors, f"seed {seed}, step {step}"
        assert {row[0]: tuple(row[1:-1]) for row in appointments} == model.appointments, f"seed {seed}, step {step}"
        assert sorted(database_history(db_config)) == sorted(
            (version[0], version[1], version[2], version[3], version[4]) for version in model.history
        ), f"seed {seed}, step {step}"


def database_history(db_config: Any) -> list:
    """appointment_history with times and run ids turned into step numbers (run order)."""
    runs = fetch(db_config, "SELECT run_id, mode, finished_at, counts->'merge'->>'loaded_at' "
                            "FROM healthtech.etl_runs ORDER BY started_at")
    step_of_run = {run_id: step for step, (run_id, _, _, _) in enumerate(runs)}
    # A merge's versions carry its load time; a replace's (recorded by the next merge) its finish.
    step_of_time = {(dt.datetime.fromisoformat(loaded_at) if mode == "merge" else finished_at): step
                    for step, (_, mode, finished_at, loaded_at) in enumerate(runs)}
    return [
        (booking, tuple(values), step_of_time[valid_from], None if valid_to is None else step_of_time[valid_to],
         step_of_run[run_id])
        for booking, *values, valid_from, valid_to, run_id in fetch(
            db_config, "SELECT booking_id, patient_id, doctor_id, booking_date, status, valid_from, valid_to, run_id "
                       "FROM healthtech.appointment_history")
    ]
