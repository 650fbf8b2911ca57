"""Systems under test: one module per subject kind (TiKV first), behind one Protocol.

Rule: what a subject *is* (its health judgement) stays pure and apart from how it is *read*
(`pd` speaks HTTP to PD; `tikv` only judges values it is handed). Errors reading a subject are
infrastructure errors (`pd.PdError`), never a verdict on the subject itself.
"""
