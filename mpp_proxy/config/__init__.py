"""Configuration: the model, its two loaders (TOML and Python), presets and auth helpers."""
