"""The ``diagnosa`` command's entry point: setup.py's console script and ``python -m diagnosa``.

Light on purpose: the command line imports pandas and boto3, a second or two before it runs, and a Ctrl-C
meanwhile printed Python's traceback. Here it is said as one in a command is (:func:`diagnosa.logs.interrupted`).
"""
import sys

from diagnosa.logs import interrupted


def main() -> int:
    """The command line's exit status."""
    try:
        from diagnosa.cli import main as command_line
    except KeyboardInterrupt:
        return interrupted()
    return command_line()


if __name__ == "__main__":
    sys.exit(main())
