"""Subcommands of the `mlff` command line (each module one command group)."""
