"""danlu conversion: training checkpoints -> Hugging Face artifacts, adapters -> merged models."""
