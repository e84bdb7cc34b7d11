"""Exceptions named for what the caller does with them."""


class MmrunError(Exception):
    """Base class: a failure mmrun reports to the user as one line."""


class ConfigError(MmrunError):
    """Bad configuration: stop before running; the message names the key and what is allowed."""


class DataError(MmrunError):
    """Bad or missing market data file: stop; the message names the file (and row)."""


class ExchangeUnavailable(MmrunError):
    """The exchange cannot be reached (retries exhausted): skip the cycle, or stop at start."""


class TemporaryError(MmrunError):
    """A transient exchange failure worth retrying (network, rate limit, bad response).

    Not an ExchangeUnavailable: one failed call is retried (and then skips a cycle); only an
    exchange that stays unreachable through the retries at start becomes ExchangeUnavailable."""


class PermanentError(MmrunError):
    """An exchange error that retrying will not fix (unknown symbol, auth): stop."""


class RunFailed(MmrunError):
    """The run started but did not finish as asked (a pair failed, the folder could not be
    written): its results so far are kept; the command exits 1."""


class OutputError(RunFailed):
    """The run folder cannot be written (full disk, permissions, a read-only file system):
    the message names the folder and the cause."""
