"""The errors a stage expects and reports as one line (`utils/cli.run`), in a module of their own
so that parsing the command line imports no TensorFlow."""


class CheckpointError(Exception):
    """A stage's input or output folder cannot be used; the message says what to do."""


class DataError(Exception):
    """A user's dataset is missing, malformed or inconsistent; the message names the file."""


class MnistError(Exception):
    """The dataset is missing, truncated or corrupt; the message names the file."""
