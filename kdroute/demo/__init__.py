"""`kdroute demo`: the whole loop on the embedded local pair (see `kdroute.demo.run`).

Modules: `run` (the stages), `traffic` (held-out prompts, the `openai` replay, the baselines'
cache), `gateway` (`kdroute serve` as a subprocess), `drift` (the degraded student of --drift),
`outcome` (the figures, from the ledger) and `report` (the figures as rich tables).
"""
