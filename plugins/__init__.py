"""Built-in plugins: one folder per feature, registered like any third-party plugin."""
