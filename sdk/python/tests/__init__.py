"""Tests of the distribot Python SDK; they run real handler programs over pipes."""
