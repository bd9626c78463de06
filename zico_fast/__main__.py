"""`python -m zico_fast`: the same command line as `zico-fast`."""
from zico_fast.cli import main

if __name__ == "__main__":  # not when a spawned scoring worker re-imports this module
    raise SystemExit(main())
