"""Pitches in: loading and validating the input files, the calendar, personas, the column layout."""
