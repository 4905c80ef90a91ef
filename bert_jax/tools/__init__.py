"""Command-line tools: checkpoint conversion, export, prediction, vocabularies, data
preparation, TPU compile reports and plots. Each module here is a `python -m` front over
the library; nothing in the library imports it."""
