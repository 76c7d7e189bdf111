"""The frames the pre-training suites validate: compact per-row summaries of a built dataset folder.

One module per suite, named like its ``expectations/suites/<name>.json``; `build.build_gate_frames` reads
the folder once and assembles them. `windows` (the crossing-window recount) and `manifest` (the manifest
checks) feed several suites; `common` holds the small helpers they share.
"""
