"""The checks behind infra/dev/check-infra: one module per area of the deployment files.

Each area module holds pure functions that take the repository root (or what was read from it)
and return the problems they find, as the lines check-infra prints, plus a `run(report, ctx)`
that wires them into the report. No module changes a file under infra/ or reaches the network:
the wrapper script installs the tools, the checks only read.
"""
