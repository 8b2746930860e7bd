"""The one exception type for bad user input.

A :class:`UserError` is printed by the CLI as one line (no traceback unless ``--debug``) and
ends the program with a non-zero exit code. Its message says what is wrong and how to fix it.
"""


class UserError(Exception):
    """Bad input from the user: configuration, files, command-line arguments."""

    exit_code = 2


class RunStopped(Exception):
    """A run stopped early on purpose, with a checkpoint written; ``--restart`` continues it.

    Subclasses carry the documented exit codes of ``meltquench run``.
    """

    exit_code = 1


class Interrupted(RunStopped):
    """SIGTERM / SIGINT or the ``--stop-after`` wall-time budget: checkpointed, exit code 75."""

    exit_code = 75


class RunawayDynamics(RunStopped):
    """NaN, overlapping atoms or a kinetic temperature far above the programme: exit code 3."""

    exit_code = 3


class SCFFailure(RunStopped):
    """The SCF did not converge, even with the fallback settings: exit code 4."""

    exit_code = 4
