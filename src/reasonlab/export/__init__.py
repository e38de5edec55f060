"""Checkpoints in the ecosystem's formats: a Hugging Face folder (`hf.export_hf`)."""
