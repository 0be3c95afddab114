"""Subcommands of the ``slt`` command line, one module each."""
