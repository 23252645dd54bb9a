"""What a run leaves on disk: the intent journal, the reports, the folder's history and its lock."""
