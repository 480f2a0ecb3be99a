"""The trainer and what it needs: optimizer and schedule, DDP, diagnostics, progress."""
