#!/usr/bin/env python3
"""Write tests/integration/durations.json, the seconds each integration test file took, from a run's JUnit XML.

    make test-integration PYTEST_ARGS=--junitxml=/tmp/integ.xml
    .venv/bin/python hack/test_durations.py /tmp/integ.xml [more.xml ...]

The integration tier's conftest hands its files to the xdist workers longest first by this table
(``longshot_testing.durations``). Files the XML does not name keep their figure. Prints, as its last line, the
total, what the workers would take at best (the total over their number) and in this order (each file to the
worker free first, as xdist does), and the longest file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from longshot_testing import durations  # noqa: E402

TESTS = ROOT / "tests"
TABLE = TESTS / "integration" / "durations.json"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("xml", nargs="+", type=Path)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    measured = durations.seconds_by_file(args.xml, TESTS)
    if not measured:
        print("no integration test case in the XML", file=sys.stderr)
        return 1
    table = durations.load(TABLE)
    table.update({k: float(round(v)) for k, v in measured.items()})
    ordered = dict(sorted(table.items(), key=lambda kv: (-kv[1], kv[0])))
    TABLE.write_text(json.dumps({k: int(v) for k, v in ordered.items()}, indent=1) + "\n")
    longest = list(ordered.values())
    total = sum(longest)
    print(f"files={len(longest)} total_s={total:.0f} best_{args.workers}_workers_s={total / args.workers:.0f} "
          f"longest_first_{args.workers}_workers_s={durations.makespan(longest, args.workers):.0f} "
          f"longest_file_s={longest[0]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
