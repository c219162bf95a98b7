"""Pipeline assembly, configuration and the ``cryptobeam`` command line."""
