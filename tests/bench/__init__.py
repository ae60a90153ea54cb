"""Tests; the layout mirrors the code."""
