"""Sharded, streaming ingest and chunking: memory bounded by a shard, never by the snapshot.

A source is cut into `SourceShard`s that can be read independently (in parallel, on other machines):

- a multistream MediaWiki dump (`…-multistream.xml.bz2`, many concatenated bz2 streams of ~100 pages)
  with its index beside it (`…-multistream-index.txt.bz2`, lines `offset:page_id:title`) → byte ranges
  aligned on stream offsets; each range is decompressed stream by stream behind the dump's <siteinfo>
  header, so a shard parses like a small dump of its own;
- a single-stream .xml.bz2 or a plain .xml → one shard, read as a stream;
- .parquet → runs of row groups; .jsonl → byte ranges aligned to line starts.

`read_shard` yields exactly a shard's articles with the filtering and cleaning of
`lvm_core.data.ingest.read_articles`; reading all shards in order gives the same articles in the same order as
reading the source whole. `write_article_shards` streams articles into bounded Parquet files,
`chunk_article_file` chunks one of them, `concat_parquet` joins files row group by row group. Every file
is published atomically (temp file, then rename). Errors name the shard or file.

Modules: `plan` (SourceShard, ShardError, planning), `read` (reading a shard), `files` (article,
chunk and joined Parquet files).
"""
