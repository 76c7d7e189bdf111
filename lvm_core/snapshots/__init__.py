"""Find Wikipedia snapshots in a folder or a Wikimedia-style dumps index, and tell which are new.

A watcher polls a source on a schedule and must start exactly one pipeline run per new snapshot. This
package answers "what snapshots are there" (`scanner`) and "which of them were neither built nor
triggered yet" (`state`, `plan`), without Prefect, so the rules can be tested and used from a notebook.

Sources (a plain path, `file://…`, or any fsspec URL such as `s3://…` or `https://…`):

- a folder of dump files: `*-pages-articles*.xml[.bz2]`, `*.parquet`, `*.jsonl` (one file = one snapshot);
- a folder of dated sub-folders `YYYYMMDD/` holding such files;
- a Wikimedia dumps index (`https://dumps.wikimedia.org/enwiki/` or a mirror of it): dated folders with a
  `dumpstatus.json`; a folder counts only once its articles job reports `"status": "done"`;
- a single dump file.

Snapshot ids follow `lvm_core.data.ingest.snapshot_id_for` (`enwiki-20240601` for a dated dump name), so
the watcher, the dataset folder and the MLflow tags all name a snapshot the same way (`snapshot`).
"""
