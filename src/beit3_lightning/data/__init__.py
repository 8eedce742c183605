"""Data: tokenizer, transforms, datasets, DataModules, index builders, embedded sample."""
