"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class AnnotomoError(Exception):
    """A problem with the user's input or environment, described in one line."""


class InputError(AnnotomoError):
    """A file given to annotomo cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
