"""Configuration: ``wxpush.toml`` read into frozen settings, with line-precise errors."""
