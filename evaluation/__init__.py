"""Evaluation of a fine-tuned model: held-out loss and perplexity, generation, LLM judges.

Knows nothing about Ray, sweeps or training; everything here takes a model (or texts) and returns
numbers and records.
"""
