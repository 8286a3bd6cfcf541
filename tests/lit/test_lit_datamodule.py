import itertools

from lit.datamodule import EndlessSampler


def test_endless_sampler_resumes_exactly_where_it_stopped():
    uninterrupted = list(itertools.islice(EndlessSampler(), 30))
    resumed = list(itertools.islice(EndlessSampler(start=12), 18))
    assert resumed == uninterrupted[12:] == list(range(12, 30))


def test_ranks_split_the_stream_without_overlap_and_resume_per_rank():
    rank0 = list(itertools.islice(EndlessSampler(rank=0, world_size=2), 8))
    rank1 = list(itertools.islice(EndlessSampler(rank=1, world_size=2), 8))
    assert sorted(rank0 + rank1) == list(range(16)) and not set(rank0) & set(rank1)
    # each rank consumed 3 items: together they resume at global position 6
    resumed = list(itertools.islice(EndlessSampler(start=3, rank=1, world_size=2), 2))
    assert resumed == rank1[3:5]
