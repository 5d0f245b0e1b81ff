"""Deterministic, leakage-free splits: rows that share a speaker or a transcript (whichever
keys are chosen) form one group; whole groups go to a split, stratified by emotion."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Callable, Hashable, Sequence, TypeVar

from svlora.errors import SvloraError

Row = TypeVar("Row")
SPLITS = ("train", "val", "test")


def connected_groups(rows: Sequence[Row], keys: list[Callable[[Row], Hashable | None]]) -> list[list[int]]:
    """Row indices grouped so that rows sharing any key value are in the same group."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key in keys:
        first_with: dict = {}
        for index, row in enumerate(rows):
            value = key(row)
            if value is None:
                continue
            if value in first_with:
                parent[find(index)] = find(first_with[value])
            else:
                first_with[value] = index
    groups: dict[int, list[int]] = defaultdict(list)
    for index in range(len(rows)):
        groups[find(index)].append(index)
    return sorted(groups.values())


def assign_groups(groups: list[list[int]], labels: Sequence[str], shares: dict[str, float],
                  seed: int) -> dict[str, list[int]]:
    """Put whole groups into parts so each part gets about its share of every label.

    Groups are visited largest first (ties in seeded random order); each goes to the part
    with the largest unmet need for the group's labels, an empty part first, so that no part
    with a share stays empty while there are groups for it.
    """
    rng = random.Random(seed)
    order = list(range(len(groups)))
    rng.shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))
    totals = Counter(labels)
    need = {part: {label: share * count for label, count in totals.items()}
            for part, share in shares.items()}
    parts: dict[str, list[int]] = {part: [] for part in shares}
    for g in order:
        counts = Counter(labels[i] for i in groups[g])
        def score(part: str) -> float:
            empty_bonus = len(labels) if not parts[part] and shares[part] > 0 else 0
            return empty_bonus + sum(min(n, need[part][label]) for label, n in counts.items()) \
                + 1e-6 * sum(need[part].values())
        best = max(shares, key=score)
        parts[best].extend(groups[g])
        for label, n in counts.items():
            need[best][label] -= n
    return parts


def split_rows(rows: list[Row], keys: list[Callable[[Row], Hashable | None]],
               label_of: Callable[[Row], str], val_fraction: float, test_fraction: float,
               seed: int) -> dict[str, list[Row]]:
    """train/val/test with no key value in two splits, stratified by `label_of`."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise SvloraError("--val and --test must be fractions in [0, 1) summing to less than 1")
    groups = connected_groups(rows, keys)
    shares = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    parts = assign_groups(groups, [label_of(r) for r in rows], shares, seed)
    result = {name: [rows[i] for i in sorted(parts[name])] for name in SPLITS}
    for name in SPLITS:
        if shares[name] > 0 and not result[name]:
            raise SvloraError(
                f"cannot make a non-empty {name} split: the rows form only {len(groups)} "
                "group(s) that share no speaker/transcript; lower --val/--test or split by "
                "fewer keys (e.g. --split-by text for a single-speaker corpus)")
    return result


def fold_rows(rows: list[Row], keys: list[Callable[[Row], Hashable | None]],
              label_of: Callable[[Row], str], folds: int, seed: int) -> list[list[Row]]:
    """K disjoint, label-stratified parts of the rows (fold k tests on part k)."""
    groups = connected_groups(rows, keys)
    if folds < 2 or folds > len(groups):
        raise SvloraError(f"--folds {folds}: need 2 ≤ K ≤ number of groups ({len(groups)})")
    parts = assign_groups(groups, [label_of(r) for r in rows],
                          {f"fold{k}": 1 / folds for k in range(folds)}, seed)
    return [[rows[i] for i in sorted(parts[f"fold{k}"])] for k in range(folds)]
