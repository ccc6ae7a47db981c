"""ConfigError: one paragraph naming the file, service, route and key that are wrong."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration that cannot be used. The message never contains a secret value."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        service: str | None = None,
        route: str | None = None,
        key: str | None = None,
        line: int | None = None,
        other_route: str | None = None,
        other_line: int | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.service = service
        self.route = route
        self.key = key
        self.line = line
        # A second route the problem is about (two routes that cannot be told apart).
        self.other_route = other_route
        self.other_line = other_line
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where: list[str] = []
        if self.file:
            where.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.service:
            where.append(f"service {self.service!r}")
        if self.route:
            where.append(f"route {self.route!r}")
        if self.key:
            where.append(f"key {self.key!r}")
        prefix = ", ".join(where)
        problem = self.problem
        if self.other_route and self.other_line:
            named = repr(self.other_route)
            problem = problem.replace(named, f"{named} (line {self.other_line})", 1)
        return f"{prefix}: {problem}" if prefix else problem

    def located(
        self, *, file: str | None = None, line: int | None = None, other_line: int | None = None
    ) -> ConfigError:
        """The same error with a file (and lines) filled in where they were missing."""
        return ConfigError(
            self.problem,
            file=self.file or file,
            service=self.service,
            route=self.route,
            key=self.key,
            line=self.line or line,
            other_route=self.other_route,
            other_line=self.other_line or other_line,
        )
