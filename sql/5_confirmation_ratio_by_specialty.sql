-- Share of appointments confirmed, per specialty (doctors without a specialty grouped as '(none)'),
-- per source and over all sources ('(all)'). Ratio over all loaded appointments of the specialty
-- (confirmed + cancelled + unknown).
SELECT CASE WHEN grouping(d.source) = 1 THEN '(all)' ELSE d.source END AS source,
       coalesce(d.specialty, '(none)') AS specialty,
       count(a.id) AS appointments,
       count(a.id) FILTER (WHERE a.status = 'confirmed') AS confirmed,
       round(100.0 * count(a.id) FILTER (WHERE a.status = 'confirmed') / nullif(count(a.id), 0), 2)
           AS confirmation_ratio_pct
FROM healthtech.doctors d
LEFT JOIN healthtech.appointments a ON a.source = d.source AND a.doctor_id = d.id
GROUP BY GROUPING SETS ((d.source, coalesce(d.specialty, '(none)')), (coalesce(d.specialty, '(none)')))
ORDER BY grouping(d.source), source, confirmation_ratio_pct DESC NULLS LAST, specialty;
