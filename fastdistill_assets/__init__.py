"""fastdistill: distill Text-to-SQL training data from a teacher LLM and prove the result."""

__version__ = "0.1.0"
