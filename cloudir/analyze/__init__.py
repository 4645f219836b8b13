"""Analysis: evidence into one timeline, rules over it."""
