"""Tools around HEAR modules: `validate` (strict API checks), `embed` (files to embeddings)."""
