"""Tools around any HEAR module: `validate` (strict API checks), `evaluate` (HEAR's protocol:
tasks, downstream MLP, metrics), `report` (comparisons), and `hear` (running a module)."""
