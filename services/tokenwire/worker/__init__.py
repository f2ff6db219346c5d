"""The generator worker: takes jobs from ``tw:jobs``, streams them from an LLM
through a token buffer into each job's event stream."""
