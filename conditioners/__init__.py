"""How text and reference audio reach the LM.

    attributes.py   per-example ConditioningAttributes (text values, reference waves) and their collation
    text.py         frozen HF encoder (T5, flan-T5, MiniLM, ...) + trainable projection, with an encoding cache
    lut.py          lookup tables for categorical attributes
    chroma.py       chromagram of a reference recording (MusicGen-melody)
    condition.py    Condition: what each conditioner returns, embeddings [B, L, D] + mask [B, L]
    dropout.py      classifier-free-guidance and per-attribute dropout
    fuser.py        routes conditions to cross attention, prepend or sum
    conditioner.py  ConditionProvider: all of the above from one ConditionerConfig (configs/conditioner/)
    tensors.py      ConditionTensors: the contract with the LM

Shapes: B batch, L condition length, S sequence steps, D LM width.
"""
