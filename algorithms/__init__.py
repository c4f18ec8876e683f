"""Single-file algorithm implementations (run as scripts: python algorithms/<name>.py --help)."""
