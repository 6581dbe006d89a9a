"""HTTP controllers: parse, call the engine, map errors to status codes. Nothing else."""
