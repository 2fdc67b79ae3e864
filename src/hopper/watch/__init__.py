"""Detection: sources that notice complete files; the daemon records and dispatches them."""
