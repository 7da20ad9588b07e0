-- Confirmed appointments per doctor of each source (clinic), every doctor listed (zero included).
SELECT d.source, d.id AS doctor_id, d.name, d.specialty, count(a.id) AS confirmed_appointments
FROM healthtech.doctors d
LEFT JOIN healthtech.appointments a
       ON a.source = d.source
      AND a.doctor_id = d.id
      AND a.status = 'confirmed'
GROUP BY d.source, d.id, d.name, d.specialty
ORDER BY confirmed_appointments DESC, d.source, d.id;
