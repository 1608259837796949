"""Running the ``vlab`` command inside a test, as a user would type it."""

from vlab.cli import main


def vlab(capsys, *argv: str) -> tuple[int, str, str]:
    """``vlab ARGV...`` in this process: (exit code, stdout, stderr) as captured by pytest."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err
