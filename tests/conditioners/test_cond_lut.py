import pytest
import torch

from conditioners.lut import LookupConditioner


def test_fixed_vocabulary_looks_up_known_values_and_masks_the_rest():
    conditioner = LookupConditioner(output_dim=8, vocabulary=["rock", "pop", "jazz"], hash_buckets=None)
    condition = conditioner(["rock", " Pop ", None, "polka"])
    assert condition.mask.tolist() == [[True], [True], [False], [False]]
    table = conditioner.table.weight
    torch.testing.assert_close(condition.embeddings[:2, 0], table[[0, 1]])
    assert condition.embeddings[2:].abs().sum() == 0


def test_hashed_words_map_each_word_to_one_row_wherever_it_appears():
    conditioner = LookupConditioner(output_dim=8, vocabulary=None, hash_buckets=64)
    condition = conditioner(["solo piano", "Piano solo with strings", ""])
    assert condition.mask.sum(dim=1).tolist() == [2, 4, 0]
    embeddings = condition.embeddings
    torch.testing.assert_close(embeddings[0, 0], embeddings[1, 1])  # "solo"
    torch.testing.assert_close(embeddings[0, 1], embeddings[1, 0])  # "piano" (case-insensitive)
    assert embeddings[0, 2:].abs().sum() == 0 and embeddings[2].abs().sum() == 0
    # Rows are a checkpoint contract, so they must not depend on the process (Python's str hash is salted):
    # golden CRC32 rows, zlib.crc32(b"solo") % 64 and zlib.crc32(b"piano") % 64.
    assert conditioner.rows("Solo  piano") == [17, 44]


@pytest.mark.parametrize("vocabulary, hash_buckets", [(None, None), (["rock"], 16), (["rock", "Rock"], None)])
def test_ambiguous_lookup_configs_are_refused(vocabulary, hash_buckets):
    with pytest.raises(ValueError, match="vocabulary|hash_buckets"):
        LookupConditioner(output_dim=8, vocabulary=vocabulary, hash_buckets=hash_buckets)
