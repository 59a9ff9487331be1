"""The error every reader raises for a bad scan: which file, what is wrong."""

from __future__ import annotations


class InvalidScanError(ValueError):
    """A scan or label file that cannot be used, naming the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
