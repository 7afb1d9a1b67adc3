"""The jobs that sample a target to make training data (`specjax make-data`, `specjax make-prompts`); the
formats they write live in `specjax.data`."""
