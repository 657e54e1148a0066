"""The one exception type users see.

Anything the user can fix (a wrong name, a bad file, an input too small for the net) raises
`ClassicNetsError` with one line that names the thing and the fix. The CLI prints that line and exits
with code 2; a Python user can catch it. Everything else is a bug and keeps its traceback.
"""


class ClassicNetsError(Exception):
    """A user-facing error: one line naming what is wrong and how to fix it."""

    exit_code = 2
