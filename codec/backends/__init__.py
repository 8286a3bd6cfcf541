"""Codec backends: faster copies of a trained `Codec` for inference, made from outside the reference path.

codec/ is the reference (channels-first activations, weight norm recomputed per call). A backend copies a codec and
swaps its encoder, decoder and quantizer on the copy for modules that compute the same function faster; the copy's
`encode`, `decode` and `streaming` are the `Codec` methods themselves, so it is used exactly as the original.

    config.py       CodecBackendConfig (kind) and `with_backend`, the one entry
    time_major.py   kind="time_major": the SEANet encoder and decoder with time-major activations, folded weight
                    norm, activations merged into the padded copies, fused residual branches, polyphase transposed
                    convs, fused LSTM cells when streaming
    quantizer.py    kind="time_major": `PrecomputedNormQuantizer`, the EMA residual VQ's encode and decode
"""
