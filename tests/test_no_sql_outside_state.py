"""State is read through named queries: no SQL text, and no raw connection, outside state/.

daemon/ and handlers/ call the named reads of state/queries.py (CorpusState) and state/eventlog.py (EventLog);
bench/ may still query freely (it measures, it is not the product). The check reads only string constants (via
`ast`), so a comment or a word in a message does not trip it, and names every offending file:line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("daemon", "handlers")
# An SQL keyword at the start of a word, in capitals as the code writes its statements, or json_extract.
SQL_WORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|json_extract)")


def _offences(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line: why` for each SQL string constant, `.conn` use and `.query(` call in one source file."""
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            match = SQL_WORD.search(node.value)
            if match:
                found.append(f"{rel}:{node.lineno}: SQL text {match.group(1)!r} in a string")
        elif isinstance(node, ast.Attribute) and node.attr == "conn":
            found.append(f"{rel}:{node.lineno}: raw connection (.conn)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "query":
            found.append(f"{rel}:{node.lineno}: .query(...) call")
    return sorted(found, key=lambda o: int(o.split(":")[1]))


def test_no_sql_outside_state() -> None:
    files = sorted(p for d in CHECKED for p in (ROOT / d).rglob("*.py"))
    assert files, "no source files found"
    offences = [o for p in files for o in _offences(p)]
    assert not offences, "SQL outside state/ (add a named query to state/queries.py):\n" + "\n".join(offences)


def test_the_check_catches_sql(tmp_path: Path) -> None:
    """The checker itself: it finds a statement, a json_extract, `.conn` and `.query(`, not a docstring."""
    (tmp_path / "handlers").mkdir()
    src = tmp_path / "handlers" / "probe.py"
    src.write_text('"""SELECT in a docstring is fine."""\n'
                   'a = "SELECT 1"\n'
                   'b = f"x WHERE json_extract(p, ?)={a}"\n'
                   'c = state.log.conn\n'
                   'd = state.query(a)\n', encoding="utf-8")
    lines = [o.split(": ", 1)[0] for o in _offences(src, tmp_path)]
    assert lines == ["handlers/probe.py:2", "handlers/probe.py:3", "handlers/probe.py:4", "handlers/probe.py:5"]
