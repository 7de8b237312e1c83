"""Errors that map to the project's exit codes: 2 for bad input or usage, 1 for a failed gate."""

from __future__ import annotations


class InputError(Exception):
    """Bad input: a missing or unreadable file, a malformed record, an unknown config key.

    The message names the file, line and field where it can. The CLI exits 2.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field = file, line, field
        where = ""
        if file:
            where = str(file)
            if line is not None:
                where += f":{line}"
            if field:
                where += f" [{field}]"
            where += ": "
        elif field:
            where = f"[{field}]: "
        super().__init__(where + message)


class GateFailed(Exception):
    """A gate ran and failed (data check, parity, SLO, eval threshold). The CLI exits 1."""
