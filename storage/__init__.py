"""Blob stores (local directory, S3/MinIO) and the metadata database."""
