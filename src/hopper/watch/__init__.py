"""Detection: sources that notice complete files, and the daemon that records and dispatches them."""
