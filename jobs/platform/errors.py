"""The errors elmo-lake raises on purpose: each one says what is wrong and what to do about it."""


class ElmoLakeError(Exception):
    """Base class: a failure the user can act on. Jobs print its message as their one-line reason."""


class ConfigError(ElmoLakeError):
    """A configuration file or --set override is invalid; the message lists every problem."""

    def __init__(self, problems: list[str], source: str = "configuration"):
        self.problems = problems
        super().__init__(f"{source} is invalid: " + "; ".join(problems))


class InputError(ElmoLakeError):
    """An input file or table cannot be used as given."""


class TableNotFoundError(ElmoLakeError):
    """A Delta table that should exist does not."""


class TableExistsError(ElmoLakeError):
    """A write in mode 'error' found a table already there."""


class SchemaMismatchError(ElmoLakeError):
    """Data written to a table does not have the table's schema."""


class UnsupportedTableError(ElmoLakeError):
    """A Delta table uses a feature this engine cannot honour; it is refused rather than read wrongly."""


class CommitConflictError(ElmoLakeError):
    """Another writer committed to the table first, in a way that conflicts with this write."""


class SetupError(ElmoLakeError):
    """Something the job needs is not installed; the message says how to install it."""


def is_missing_path(exc: BaseException) -> bool:
    """Whether a Spark read failed because its path does not exist (classic and Connect word it differently)."""
    text = str(exc)
    return "PATH_NOT_FOUND" in text or "does not exist" in text
