"""Rewrite docs/harness.md's config-schema table from spt_bench/config.py (the schema).

python scripts/schema_doc.py          # rewrite the table in place
python scripts/schema_doc.py --check  # exit 1 when the docs have drifted
"""

from __future__ import annotations

import sys
from pathlib import Path

from spt_bench.cli_flags import SCHEMA_DOC_BEGIN, SCHEMA_DOC_END, schema_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "harness.md"


def with_table(text: str) -> str:
    start = text.index(SCHEMA_DOC_BEGIN) + len(SCHEMA_DOC_BEGIN)
    end = text.index(SCHEMA_DOC_END)
    return text[:start] + "\n" + schema_markdown() + text[end:]


def main() -> int:
    text = DOC.read_text(encoding="utf-8")
    new = with_table(text)
    if "--check" in sys.argv:
        if new != text:
            print(f"{DOC} is out of date: run python scripts/schema_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
