"""User-facing errors.

Every problem with something a user gave us (a folder, a file, a CSV row, a config value,
a checkpoint) raises a subclass of :class:`ReidError`. Its message is one line that names the
thing and says what was expected. The command line prints that line and exits with code 2,
without a traceback; notebooks show it as an ordinary exception.
"""


class ReidError(ValueError):
    """A problem with user input, explained in one line."""


class DataError(ReidError):
    """A dataset folder, image, file name, annotation CSV or ``.mat`` file is not as expected."""


class ConfigError(ReidError):
    """An unknown or out-of-range hyperparameter."""


class CheckpointError(ReidError):
    """A checkpoint file is missing, corrupt, or does not match the requested model/config."""


class ExportError(ReidError):
    """A submission file would be malformed."""


class TrainingError(RuntimeError):
    """Training cannot continue (for example the loss became NaN or Inf)."""
