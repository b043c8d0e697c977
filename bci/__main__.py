"""``python -m bci``: the ``bci`` command line."""

from bci.cli import main

if __name__ == "__main__":  # a spawned worker process re-imports this module: do nothing
    main()
