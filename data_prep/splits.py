"""Deterministic group-disjoint splits: no speaker (or transcript) lands in two splits."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Callable, TypeVar

from svlora.errors import SvloraError

Row = TypeVar("Row")
SPLITS = ("train", "val", "test")


def split_rows(rows: list[Row], group_of: Callable[[Row], str], val_fraction: float,
               test_fraction: float, seed: int) -> dict[str, list[Row]]:
    """Assign whole groups to test, then val, then train, in a seeded random order."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise SvloraError("--val and --test must be fractions in [0, 1) summing to less than 1")
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[group_of(row)].append(row)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    wanted = {"test": test_fraction * len(rows), "val": val_fraction * len(rows)}
    result: dict[str, list[Row]] = {name: [] for name in SPLITS}
    for group in order:
        target = next((s for s in ("test", "val") if len(result[s]) < wanted[s]), "train")
        result[target].extend(groups[group])
    for name in ("test", "val"):
        if wanted[name] > 0 and not result[name]:
            raise SvloraError(f"cannot make a non-empty {name} split from {len(groups)} group(s); "
                              "lower the fractions or split by a finer key")
    if not result["train"]:
        raise SvloraError(f"no group left for train ({len(groups)} group(s)); lower --val/--test")
    return result
