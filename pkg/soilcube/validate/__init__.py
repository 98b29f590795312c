"""Scores of soil-moisture products against references."""
