"""Great Expectations suites for the pre-training data gates and the code that runs them as a checkpoint.

``suites/<name>.json`` holds each suite, ``frames/<name>.py`` builds the frame it validates, `runner` runs
them all as one checkpoint and `check` re-runs them on an existing dataset folder (`lvm check`).
"""
