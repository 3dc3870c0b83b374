"""The shared core: models, corpora, batched forward passes, statistics, the cache and all-or-nothing writes."""
