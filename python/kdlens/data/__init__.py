"""Data for kdlens: prompt templates, LLM-Adapters-format records, the synthetic task, batching."""
