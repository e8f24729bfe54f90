"""Readers, preprocessing, splits, the health report and the prepared-dataset store."""
