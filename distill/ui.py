"""Terminal output: rich tables and progress bars with rates and ETAs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def short_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_summary(title: str, fields: dict[str, Any]) -> None:
    """One `field | value` line each: a summary of ten fields stays readable in 80 columns."""
    print_table(title, [{"": key, "value": value} for key, value in fields.items()])


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key in rows[0] if rows else []:
        table.add_column(key)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console = Console()
    if not console.is_terminal:  # piped/logged: don't squeeze tables into 80 columns and cut names
        console = Console(width=240)
    console.print(table)


def progress(**kwargs):
    """A rich Progress with count, rate and ETA columns; extra text fields via task fields."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        **kwargs,
    )
