-- Which doctor has the most confirmed appointments? Per source (clinic: ids are per source) and over
-- all sources (scope '(all)'); ties: every doctor sharing the top count of the scope.
WITH confirmed AS (
    SELECT d.source, d.id AS doctor_id, d.name, d.specialty, count(*) AS confirmed_appointments
    FROM healthtech.appointments a
    JOIN healthtech.doctors d ON d.source = a.source AND d.id = a.doctor_id
    WHERE a.status = 'confirmed'
    GROUP BY d.source, d.id, d.name, d.specialty
), scoped AS (
    SELECT '(all)' AS scope, * FROM confirmed
    UNION ALL
    SELECT source AS scope, * FROM confirmed
)
SELECT scope, source, doctor_id, name, specialty, confirmed_appointments
FROM scoped s
WHERE confirmed_appointments = (SELECT max(confirmed_appointments) FROM scoped t WHERE t.scope = s.scope)
ORDER BY scope = '(all)' DESC, scope, source, doctor_id;
