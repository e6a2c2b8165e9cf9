"""``python -m shiftlab.ingest dataset=<name> [split_seed=N]``: the ingest command."""

from shiftlab.ingest.run import main

if __name__ == "__main__":
    main()
