"""Settings package.

`base` is the settings module of every deployment and the only module that reads the
environment; `test` adjusts it for the test suite.
"""
