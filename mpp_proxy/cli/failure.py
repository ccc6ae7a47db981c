"""Failure: an expected CLI error, printed as one line with its fix, and its exit code."""

from __future__ import annotations

# Exit codes: 2 = the operator must change the config or the command line, 1 = the world is not
# as needed (port taken, store down, payment failed).
EXIT_CONFIG = 2
EXIT_RUNTIME = 1


class Failure(Exception):
    """A problem the operator can fix; never carries a secret."""

    def __init__(self, problem: str, fix: str = "", *, exit_code: int = EXIT_RUNTIME) -> None:
        self.problem = problem
        self.fix = fix
        self.exit_code = exit_code
        super().__init__(self.line)

    @property
    def line(self) -> str:
        return f"{self.problem}; {self.fix}" if self.fix else self.problem
