"""The Semantic-ID family's shared parts: the RQ-VAE tokenizer, the SID table a dataset carries, the trie of valid
SIDs and the one constrained beam search every SID model decodes with (docs/design.md sections 3-4)."""
