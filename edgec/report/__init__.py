"""Release evidence built on bench reports: host provenance, regression against an earlier report, run history, comparison."""
