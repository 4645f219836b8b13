"""cloudir's DuckDB backend for pySigma, laid out as pySigma backends are.

pySigma's SQLite backend (`sigma/backends/sqlite/`) keeps the backend class in one module
with its correlation compiler and runtime beside it; so does this package:

- `backend.py`: `DuckDBBackend`, Sigma conditions to DuckDB predicates over timeline rows;
- `fields.py`: the raw JSON fields a rule set reads, parsed once a row;
- `correlation.py`: correlation rules as SQL window queries over the matched events;
- `runtime.py`: the DuckDB functions the compiled SQL calls.

Nothing is imported here: `backend.py` imports pySigma, which only the commands that run
rules should pay for (`cloudir report` and `--help` import detect.py, not pySigma).
"""
