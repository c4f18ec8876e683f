"""Single-file algorithm implementations (run as scripts: python baselines/<name>.py --help)."""
