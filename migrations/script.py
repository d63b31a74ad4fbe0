"""Run a multi-statement SQL script through Alembic (asyncpg prepares one statement at a time)."""

from __future__ import annotations

from alembic import op


def statements(script: str) -> list[str]:
    """Split on semicolons at line ends, keeping dollar-quoted bodies ($$ … $$) whole."""
    out: list[str] = []
    current: list[str] = []
    in_body = False
    for line in script.splitlines():
        if line.strip().startswith("--") and not in_body:
            continue
        current.append(line)
        if line.count("$$") % 2 == 1:
            in_body = not in_body
        if not in_body and line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";")
            if statement:
                out.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        out.append(tail)
    return out


def run(script: str) -> None:
    for statement in statements(script):
        op.execute(statement)
