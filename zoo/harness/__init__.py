"""Training, evaluation, data, results and leaderboards."""
