import torch
import torch.nn.functional as F

from conditioners.text import TextConditioner


def test_minilm_ranks_a_paraphrase_above_an_unrelated_prompt():
    # Identity projection, so the conditioner's mean-pooled output is MiniLM's own sentence embedding.
    conditioner = TextConditioner(
        encoder="minilm", output_dim=384, pooling="mean", max_length=64, dtype="float32", cache_size=0
    )
    with torch.no_grad():
        conditioner.projection.weight.copy_(torch.eye(384))
        conditioner.projection.bias.zero_()
        prompts = [
            "upbeat electronic dance music with a driving beat",
            "energetic EDM track with a pumping rhythm",
            "the weather report for tomorrow morning",
        ]
        embeddings = conditioner(prompts).embeddings[:, 0]  # [3, 384]
    paraphrase = F.cosine_similarity(embeddings[0], embeddings[1], dim=0)
    unrelated = F.cosine_similarity(embeddings[0], embeddings[2], dim=0)
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)
