"""Data contracts: folder layout and schemas, errors, the manifest, gates and build options."""
