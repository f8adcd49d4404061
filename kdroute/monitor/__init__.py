"""The monitor: shadow evaluation of student answers against the teacher, agreement drift alarms
and the quality breaker.

    stats      weighted rates with Wilson intervals, PSI (pure; every reader shares them)
    answers    tier 1 of agreement: final-answer extraction and normalisation
    agreement  the tiered scorer (answer, embedding, LLM judge) and threshold calibration
    sampling   stratified shadow sampling with known inclusion probabilities
    slices     "all", router-score buckets, task families (a prompt classifier)
    detect     rolling Wilson windows, the Bernoulli CUSUM, input drift (pure)
    shadow     the background evaluations: queue, concurrency, daily budget, ledger rows
    breaker    the quality breaker's snapshot and the routing guard
    alerts     the log and the optional webhook
    service    the monitor of one gateway worker: listener, poll loop, `build_monitor`
    replay     recorded pairs and ledger exports through the detector, offline

Importing this package is light; `service` pulls the gateway's pieces it needs when built.
"""
