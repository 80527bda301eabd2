"""Data: the request-log contract, window reads, validation, collate, synthetic and public data."""
