"""Paper A (Sundar et al., ACL 2025): find language experts, force them, and measure the embedding space."""
