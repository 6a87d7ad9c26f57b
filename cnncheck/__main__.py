"""``python -m cnncheck`` runs the command-line interface."""

from cnncheck.cli import main

if __name__ == "__main__":
    main()
