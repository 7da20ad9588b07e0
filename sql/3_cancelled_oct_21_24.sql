-- Cancelled appointments from 2025-10-21 to 2025-10-24 inclusive (whole days: any time on the 24th
-- counts). Per source, then over all sources ('(all)').
SELECT CASE WHEN grouping(source) = 1 THEN '(all)' ELSE source END AS source,
       count(*) AS cancelled_appointments
FROM healthtech.appointments
WHERE status = 'cancelled'
  AND booking_date >= DATE '2025-10-21'
  AND booking_date < DATE '2025-10-24' + 1
GROUP BY GROUPING SETS ((source), ())
ORDER BY grouping(source), source;
