"""`python -m zico_fast`: the same command line as `zico-fast`."""
from zico_fast.cli import main

raise SystemExit(main())
