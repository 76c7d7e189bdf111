"""The frames the pre-training suites validate: small summaries of a built dataset folder.

One module per suite (or pair of suites), named like its ``expectations/suites/<name>.json``;
`build.build_gate_frames` reads the folder once, streaming, and assembles them. Suites over rows run on a
seeded sample (`sample`) and their ``<name>_exact`` partners on counts over every row (docs/data-gates.md).
`windows` (the crossing-window recount, reading `npz_blocks`) and `manifest` (the manifest checks) feed
several suites; `common` holds the small helpers they share.
"""
