"""Data and loaders for the quant tests."""
