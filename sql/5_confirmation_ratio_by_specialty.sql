-- Share of appointments confirmed, per specialty (doctors without a specialty grouped as '(none)').
-- Ratio over all loaded appointments of the specialty (confirmed + cancelled + unknown).
SELECT coalesce(d.specialty, '(none)') AS specialty,
       count(a.id) AS appointments,
       count(a.id) FILTER (WHERE a.status = 'confirmed') AS confirmed,
       round(100.0 * count(a.id) FILTER (WHERE a.status = 'confirmed') / nullif(count(a.id), 0), 2)
           AS confirmation_ratio_pct
FROM healthtech.doctors d
LEFT JOIN healthtech.appointments a ON a.doctor_id = d.id
GROUP BY coalesce(d.specialty, '(none)')
ORDER BY confirmation_ratio_pct DESC NULLS LAST, specialty;
