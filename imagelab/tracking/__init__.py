"""What a run reports: the console, W&B (mode, run set-up, files, tables, the offline reader) and image panels."""
