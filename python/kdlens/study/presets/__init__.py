"""Built-in study presets (TOML): ``synthetic`` (the offline default), ``quick`` (a few minutes, a
glance at the pipeline), ``smoke`` (a reduced study that tests use), ``paper-qwen-math`` (the
paper's Qwen math grid, for GPUs with hub access)."""
