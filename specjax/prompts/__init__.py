"""Prompts: training prompt sources (`sources`) and evaluation suites (`suites`), read through one spec grammar."""
