from svlora.decoding import duration_batches
from svlora.features import pack_by_padded_seconds


def test_packing_bounds_padded_seconds_in_the_given_order():
    # 60 frames = 3.6 s: [10, 10, 20] pads to 20 × 3 × 0.06 = 3.6 s; adding 50 would be 12 s
    assert pack_by_padded_seconds([10, 10, 20, 50], 3.6) == [[0, 1, 2], [3]]
    assert pack_by_padded_seconds([50, 10], 3.6) == [[0], [1]]  # an over-long clip stands alone
    assert pack_by_padded_seconds([], 3.6) == []


def test_duration_batches_sort_by_length_first():
    assert duration_batches([50, 10, 20, 10], 3.6) == [[1, 3, 2], [0]]
