"""Hostile workbooks through the real console script: a refusal is exit 3 and one line, the
database keeps its previous data; rows written out of order all load."""

from helpers import APPOINTMENTS_HEADER, AS_OF, DOCTORS_HEADER, cli_subprocess, fetch, snapshot
from raw_xlsx import n, s, stream_into, write_raw_xlsx


def test_the_far_cell_workbook_is_refused_with_one_line(run_cli, sample_inputs, db_config, tmp_path):
    doctors, appointments = sample_inputs
    assert run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF) == 0
    before = snapshot(db_config)
    far = write_raw_xlsx(tmp_path / "far.xlsx", [[s(name) for name in DOCTORS_HEADER], [n(1), s("Dr A"), s("x")]],
                         extra_cells=[("XFD1048576", s("stray"))])
    assert far.stat().st_size < 4096
    result = cli_subprocess(["etl", "--doctors", str(far), "--appointments", str(appointments), "--as-of", AS_OF],
                            cwd=tmp_path, env={"DATABASE_URL": db_config.url(), "RUST_BACKTRACE": "1"})
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "a stray cell far from the data" in lines[0], result.stderr
    assert snapshot(db_config) == before


def test_rows_written_out_of_order_all_load(run_cli, sample_inputs, db_config, tmp_path):
    doctors, _ = sample_inputs
    body = [[n(i), n(30 + i), n(1), s("10/21/2025"), s("confirmed")] for i in range(1, 7)]
    path = write_raw_xlsx(tmp_path / "a.xlsx", [[s(name) for name in APPOINTMENTS_HEADER], *body])
    # rows 5-7 written before rows 1-4: calamine alone would drop the first rows it meets
    stream_into(path, "xl/worksheets/sheet1.xml", b'<row r="1">', [b'<row r="99"><c r="A99"><v>99</v></c>'
                b'<c r="B99"><v>9</v></c><c r="C99"><v>1</v></c><c r="D99" t="inlineStr"><is><t>10/21/2025</t>'
                b'</is></c><c r="E99" t="inlineStr"><is><t>confirmed</t></is></c></row><row r="1">'])
    assert run_cli("etl", "--doctors", str(doctors), "--appointments", str(path), "--as-of", AS_OF) == 0
    assert fetch(db_config, "SELECT array_agg(id ORDER BY id) FROM healthtech.appointments")[0][0] == [
        1, 2, 3, 4, 5, 6, 99]
