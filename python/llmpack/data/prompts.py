"""Prompts for greedy-generation comparisons (tests/vllm, bench/df11_e2e.py):
literary, factual, code and technical openings, so one flipped near-tie does
not decide a comparison."""

PROMPTS = [
    "It is a truth universally acknowledged, that",
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three laws of thermodynamics are",
    "Mr. Darcy looked at Elizabeth and said",
]
