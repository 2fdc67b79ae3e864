"""``python -m hopper`` runs the CLI."""

from hopper.cli import main

if __name__ == "__main__":
    main()
