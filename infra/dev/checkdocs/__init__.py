"""The checks of infra/dev/check-docs that hold the documents to facts the code states.

Each function takes the folder the documents are read from (`docs`, the repository or, in the
self-test, a copy with errors planted) and the repository (`repo`: where the code, the rule
files, the benchmark results and the built binaries are), and returns a list of problems, each
a line naming the file (and the line where there is one). Needs python3 only.
"""
