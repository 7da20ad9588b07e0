-- Confirmed appointments per doctor, every doctor listed (zero included).
SELECT d.id AS doctor_id, d.name, d.specialty, count(a.id) AS confirmed_appointments
FROM healthtech.doctors d
LEFT JOIN healthtech.appointments a
       ON a.doctor_id = d.id
      AND a.status = 'confirmed'
GROUP BY d.id, d.name, d.specialty
ORDER BY confirmed_appointments DESC, d.id;
