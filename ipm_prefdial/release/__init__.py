"""Writing a build: parquet files, the dataset card and the manifest (and nothing else)."""
