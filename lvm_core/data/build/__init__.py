"""Dataset build steps over files: ingest → chunk → embed (shard by shard) → assemble → analyse
(coherence, splits, leakage, sequences, oracle) → manifest → publish; and loading a published dataset.

Each step writes its output into a content-addressed work folder (`<data_dir>/work/<key>/`) and is
idempotent, so an interrupted build resumes from the last finished shard and an unchanged snapshot is
not recomputed. The dataset folder is assembled in a staging folder and renamed into place only when
its gates passed; a failed build is kept aside for inspection and never replaces a good dataset.

Submodules, one stage each: source (which snapshot), work (step keys, work folders, done records),
ingest, dedup (the global pass), chunk, embed, assemble, analyse, oracle, publish, load.
"""
