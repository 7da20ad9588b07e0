-- Which doctor has the most confirmed appointments? (ties: every doctor sharing the top count)
WITH confirmed AS (
    SELECT d.id AS doctor_id, d.name, d.specialty, count(*) AS confirmed_appointments
    FROM healthtech.appointments a
    JOIN healthtech.doctors d ON d.id = a.doctor_id
    WHERE a.status = 'confirmed'
    GROUP BY d.id, d.name, d.specialty
)
SELECT doctor_id, name, specialty, confirmed_appointments
FROM confirmed
WHERE confirmed_appointments = (SELECT max(confirmed_appointments) FROM confirmed)
ORDER BY doctor_id;
