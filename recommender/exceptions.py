"""Every error the engine raises on purpose. Each message says what, where and what was expected."""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class: a problem the user can fix. The CLI prints these without a traceback."""


class DataValidationError(RecommenderError, ValueError):
    """A canonical table breaks the schema.

    Parameters
    ----------
    message : str
        What is wrong and what was expected.
    file : str, optional
        The file (or table name) the problem is in.
    row : int, optional
        1-based data row number (the header is row 0), as a spreadsheet user counts.
    column : str, optional
        The offending column.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ):
        self.file, self.row, self.column, self.reason = file, row, column, message
        where = ", ".join(
            part
            for part in (
                file and f"file {file}",
                row is not None and f"row {row}",
                column and f"column '{column}'",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class UnknownIdError(RecommenderError, KeyError):
    """An external id (patient, treatment, condition) is not known to the model or dataset."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotFittedError(RecommenderError, AttributeError):
    """A model was used before ``fit`` (or ``load``)."""


class ArtifactError(RecommenderError):
    """An artifact folder is missing, partial, tampered with or of an unknown format."""


class ParameterError(RecommenderError, ValueError):
    """A model or policy parameter is out of its allowed range."""
