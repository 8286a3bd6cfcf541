import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

SENTENCES = [
    "a calm piano melody with soft strings",
    "an upbeat electronic dance track with a driving beat",
    "a slow blues guitar solo in a smoky bar",
    "epic orchestral music with brass and choir",
    "lofi hip hop beat with vinyl crackle and mellow keys",
]


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> str:
    """A random-weight 2-layer T5 encoder and a word-level tokenizer trained on SENTENCES, saved like a HF checkpoint."""
    directory = tmp_path_factory.mktemp("tiny_t5")
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    wrapped.save_pretrained(directory)
    config = T5Config(
        vocab_size=tokenizer.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        dropout_rate=0.5, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    T5EncoderModel(config).save_pretrained(directory)
    return str(directory)
