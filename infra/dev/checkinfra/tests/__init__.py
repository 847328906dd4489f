"""Unit tests of the checks: each area's rules on small fixtures that keep every rule, then with
one thing broken. check-infra runs them (its "Scripts" section)."""
