"""Read Wikipedia articles as clean plain text from MediaWiki XML dumps, Parquet or JSONL.

Every source is streamed (a dump of many GB never sits in memory) and yields `Article`s whose text is
plain prose with paragraphs separated by one blank line, the input the chunker expects. XML dumps are
parsed with `mwxml` and their wikitext is rendered with `mwparserfromhell`: only namespace-0 articles
are kept; redirects and disambiguation pages are skipped; references, templates, files, tables,
categories, interlanguage links, headings and trailing link/reference sections are dropped.

Any bad input (missing file, truncated or corrupt bz2, malformed XML, empty dump, missing columns,
unsupported extension) raises `IngestError` with a one-line message naming the file and the problem.

Modules: `sources` (which source, which reader, snapshot ids), `mediawiki` (XML dumps), `wikitext`
(cleaning), `tabular` (Parquet, JSONL), `duplicates` (repeated ids), `base` (Article, IngestError),
`shards` (sharded reading and article/chunk files), `download` (remote sources).
"""
