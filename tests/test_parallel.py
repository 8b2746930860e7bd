import numpy as np

from meltquench.kernels.parallel import SerialComm, allreduce_sum, block_range, get_comm


def test_block_range_covers_everything_once():
    for n in (0, 1, 5, 17, 100):
        for size in (1, 2, 3, 7):
            seen = []
            for rank in range(size):
                start, stop = block_range(n, rank, size)
                seen.extend(range(start, stop))
            assert seen == list(range(n))


def test_serial_comm_reduction_is_identity():
    comm = SerialComm()
    a = np.arange(5.0)
    assert np.array_equal(allreduce_sum(a, comm), a)
    assert get_comm(comm) is comm
