"""Fetching and decoding the images and videos of a job, in the worker's job preparation."""
