"""Evaluation: ranking metrics kept as sums and counts, shared by training and the replay job."""
