"""Measured experiments, one module per chapter: `run_*(...) -> pandas.DataFrame` plus a `*_widget(...)` on the same run."""
