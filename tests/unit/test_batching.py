"""Cutting due files into batches by count and by bytes."""

from __future__ import annotations

import pytest

from hopper.batching import batch_size, cut_batches, is_full


def _cut(sizes: list[int], max_files: int, max_bytes: int) -> list[list[int]]:
    return cut_batches(sizes, lambda size: size, max_files, max_bytes)


def test_small_files_are_cut_by_count() -> None:
    assert _cut([1] * 5, max_files=2, max_bytes=1000) == [[1, 1], [1, 1], [1]]


def test_large_files_are_cut_by_bytes() -> None:
    assert _cut([40, 40, 40, 10, 10], max_files=100, max_bytes=100) == [[40, 40], [40, 10, 10]]


def test_a_file_larger_than_the_limit_goes_alone() -> None:
    assert _cut([5, 500, 5], max_files=100, max_bytes=100) == [[5], [500], [5]]
    assert _cut([500], max_files=100, max_bytes=100) == [[500]]


def test_a_batch_may_hold_exactly_the_limit() -> None:
    assert _cut([50, 50, 1], max_files=100, max_bytes=100) == [[50, 50], [1]]


@pytest.mark.parametrize(
    ("sizes", "max_files", "max_bytes"),
    [([], 3, 10), ([7, 3, 9, 1, 12, 4], 3, 10), ([0] * 7, 2, 1), ([11, 11], 1, 10)],
)
def test_batches_keep_every_item_in_order_within_the_limits(
    sizes: list[int], max_files: int, max_bytes: int
) -> None:
    batches = _cut(sizes, max_files, max_bytes)
    assert [s for batch in batches for s in batch] == sizes
    for batch in batches:
        assert batch and len(batch) <= max_files
        assert sum(batch) <= max_bytes or len(batch) == 1


def test_due_files_fill_a_batch_by_count_or_by_bytes() -> None:
    assert is_full([1, 1], max_files=2, max_bytes=100)
    assert is_full([60, 40], max_files=10, max_bytes=100)
    assert not is_full([60, 39], max_files=10, max_bytes=100)


@pytest.mark.parametrize(
    ("burst", "max_files", "size"),
    [
        (1, 4000, 500),  # a trickle: up to the floor
        (1000, 4000, 500),  # 2 runs of 500
        (3000, 4000, 1500),  # 2 runs
        (8000, 4000, 4000),  # 2 runs of the bound
        (8000, 2000, 2000),  # 4 runs of a lower bound
        (100_000, 4000, 4000),  # as many runs as the bound needs
        (8000, 100, 100),  # a home's own bound wins over the floor
    ],
)
def test_a_bursts_batches_grow_with_it_within_the_bounds(
    burst: int, max_files: int, size: int
) -> None:
    assert batch_size(burst, max_files) == size
