-- Cancelled appointments from 2025-10-21 to 2025-10-24 inclusive (whole days: any time on the 24th counts).
SELECT count(*) AS cancelled_appointments
FROM healthtech.appointments
WHERE status = 'cancelled'
  AND booking_date >= DATE '2025-10-21'
  AND booking_date < DATE '2025-10-24' + 1;
