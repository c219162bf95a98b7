"""Exchange file formats: each module turns raw batches of one format into normalized trade batches."""
