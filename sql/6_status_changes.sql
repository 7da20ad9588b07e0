-- Appointments whose status changed between two loaded versions (merge mode history), with the
-- status before and after, when the change was loaded and by which run (etl_runs.run_id); every
-- source (clinic), each appointment's versions within its source.
SELECT source, booking_id, patient_id, status_before, status_after, changed_at, run_id
FROM (
    SELECT source,
           booking_id,
           patient_id,
           lag(status) OVER versions AS status_before,
           status AS status_after,
           valid_from AS changed_at,
           run_id
    FROM healthtech.appointment_history
    WINDOW versions AS (PARTITION BY source, booking_id ORDER BY valid_from)
) AS changes
WHERE status_before <> status_after
ORDER BY changed_at, source, booking_id;
