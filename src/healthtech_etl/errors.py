"""The one exception hierarchy: critical problems abort the run with a documented exit code.
Row-level problems are not exceptions: a bad row is rejected with reason codes and the run goes on."""


class EtlError(Exception):
    """Base class of every error this package raises on purpose; messages are one line."""

    exit_code = 1


class CriticalError(EtlError):
    """A problem that stops the whole run; the database keeps its previous data."""


class ConfigError(CriticalError):
    """Bad command line, environment or settings."""

    exit_code = 2


class InputFileError(CriticalError):
    """An input workbook is missing, unreadable, empty or lacks a mandatory column."""

    exit_code = 3


class DatabaseError(CriticalError):
    """The database is unreachable or a statement failed; the transaction was rolled back."""

    exit_code = 4


class QualityGateError(CriticalError):
    """A data-quality alert reached the ``--fail-on`` level; nothing was loaded."""

    exit_code = 5


class ReportError(EtlError):
    """The data WAS loaded (committed), but the report could not be written or published."""

    exit_code = 6


class Interrupted(EtlError):
    """SIGINT or SIGTERM stopped the run; the message says whether the load committed."""

    exit_code = 130


EXIT_CODES = {
    0: "ok",
    ConfigError.exit_code: "usage or configuration error",
    InputFileError.exit_code: "input file problem",
    DatabaseError.exit_code: "database problem",
    QualityGateError.exit_code: "quality gate (--fail-on) tripped",
    ReportError.exit_code: "data loaded, report not published",
    Interrupted.exit_code: "interrupted (SIGINT or SIGTERM)",
}
