"""Quality gates: clean, rules, parse, execute, gold match, judge, select. Pure per-row logic."""
