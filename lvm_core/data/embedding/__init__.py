"""Chunk embeddings: the encoder, its fingerprint and `embed_texts` (cache in embedding.cache, files in vector_files).

Every embeddings artifact carries the fingerprint of the encoder that produced it (model name, weights
digest, dimension, normalisation). Vectors from two encoders live in different spaces, so an artifact
built with another fingerprint is refused instead of being mixed in.

Modules: `fingerprint` (identity, Encoder protocol, errors), `model_folder` (where the weights are,
digest, casing), `encoder` (loading, backend choice), `agreement` (faster backends against fp32),
`onnx` (ONNX int8 export and encoder), `embed` (embed_texts), `cache` (the persistent vector cache).
"""
