"""Subcommands of the ``genbound`` command line (see :mod:`genbound.cli`)."""
