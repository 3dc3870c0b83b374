"""Paper B (Lin et al., Findings of EMNLP 2024): DPO's implicit reward against an explicit reward model."""
