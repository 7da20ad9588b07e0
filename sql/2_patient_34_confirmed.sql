-- How many confirmed appointments does patient 34 have? Per source, then over all sources ('(all)').
SELECT CASE WHEN grouping(source) = 1 THEN '(all)' ELSE source END AS source,
       34 AS patient_id, count(*) AS confirmed_appointments
FROM healthtech.appointments
WHERE patient_id = 34
  AND status = 'confirmed'
GROUP BY GROUPING SETS ((source), ())
ORDER BY grouping(source), source;
