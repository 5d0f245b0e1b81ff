"""What `prepare` does with the rows it rejects: rejected.csv (safe to open in a spreadsheet,
ready to fix and re-run) and the --max-rejected limit. No heavy imports: the CLI parses the
limit before reading any audio."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from svlora.data_prep.readers import FIELDS
from svlora.data_prep.spreadsheet import REJECTED_MARKER, spreadsheet_safe
from svlora.errors import SvloraError


def rejected_csv(rejected: list[dict]) -> str:
    """rejected.csv: each rejected row's fields (its other columns too, e.g. a head's), its
    reason and where it was read."""
    extra = sorted({name for r in rejected for name in r["fields"]} - set(FIELDS) - REJECTED_MARKER)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*FIELDS, *extra, *sorted(REJECTED_MARKER)],
                            lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows({name: spreadsheet_safe(str(value)) for name, value in
                      {**r["fields"], "reason": r["reason"], "row": r["row"]}.items()}
                     for r in rejected)
    return buffer.getvalue()


@dataclass(frozen=True)
class RejectLimit:
    """--max-rejected: at most `count` rows, or at most `percent` % of the rows read."""

    text: str
    count: int | None = None
    percent: Decimal | None = None  # exact: 29% of 100 rows allows 29, not 28

    @classmethod
    def parse(cls, text: str) -> RejectLimit:
        usage = (f"--max-rejected {text!r}: use a number of rows (e.g. 5) or a share of the rows "
                 "read (e.g. 10%)")
        value = text.strip()
        try:
            if value.endswith("%"):
                percent = Decimal(value[:-1])
                if not percent.is_finite() or not 0 <= percent <= 100:
                    raise SvloraError(usage)
                return cls(text=value, percent=percent)
            if not (value.isascii() and value.isdigit()):  # isdigit alone passes '²'
                raise SvloraError(usage)
            return cls(text=value, count=int(value))
        except InvalidOperation:
            raise SvloraError(usage) from None

    def allowed(self, rows_read: int) -> int:
        """How many rejected rows pass, of rows_read."""
        return self.count if self.count is not None else int(self.percent * rows_read / 100)

    def problem(self, rows_rejected: int, rows_read: int, out: str | Path) -> str | None:
        """Why this many rejected rows fail the limit, or None."""
        if rows_rejected <= self.allowed(rows_read):
            return None
        return (f"rejected {rows_rejected} of {rows_read} rows, above --max-rejected {self.text} "
                f"(at most {self.allowed(rows_read)}); the rows and their reasons are in "
                f"{Path(out) / 'rejected.csv'} (the manifests were written)")


def rejected_line(report: dict, out: str | Path) -> str:
    """The last line prepare prints: how many rows were rejected, and where they are."""
    line = f"rejected {report['rows_rejected']} of {report['rows_read']} rows"
    return line + (f": see {Path(out) / 'rejected.csv'}" if report["rows_rejected"] else "")
