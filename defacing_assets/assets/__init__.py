"""Assets, one module per stage; each body reads config, calls the core, attaches metadata."""
