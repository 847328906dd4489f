"""Unit tests of the checks: each area's rules on small fixtures or on copies of the shipped files
with one thing broken. check-infra runs them (the "Scripts" section)."""
