"""The `distill` command line (typer); each command is a few lines calling distill.*."""
