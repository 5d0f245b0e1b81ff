"""CSV cells a spreadsheet opens as text: OWASP's CSV-injection rule, and its inverse so that a
file svlora wrote (rejected.csv) reads back with the user's own text."""

# A cell starting with one of these is a formula (or hides one) to Excel and LibreOffice.
# defusedcsv is not used: it skips tab and CR and rewrites `|` inside the cell, so a fixed
# transcript would not survive the re-run.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# columns only rejected.csv has: the reader undoes the quoting for such a file alone
REJECTED_MARKER = {"reason", "row"}


def spreadsheet_safe(cell: str) -> str:
    """The cell with a leading single quote if a spreadsheet would read it as a formula."""
    return f"'{cell}" if cell.startswith(FORMULA_PREFIXES) else cell


def from_spreadsheet_safe(cell: str) -> str:
    """spreadsheet_safe undone: a quote before a formula character is dropped."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_PREFIXES) else cell
