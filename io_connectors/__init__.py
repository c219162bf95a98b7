"""Sources, sinks and collectors: everything that knows about files, formats and storage."""
