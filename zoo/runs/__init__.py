"""What a run is and where it is kept: config, run folders, the results database, protocols, environment, files."""
