-- How many confirmed appointments does patient 34 have?
SELECT 34 AS patient_id, count(*) AS confirmed_appointments
FROM healthtech.appointments
WHERE patient_id = 34
  AND status = 'confirmed';
