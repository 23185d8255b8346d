"""Grammar-constrained decoding: what a request's output must be (`spec`), its grammar
compiled once and cached (`compiler`, XGrammar), and each step's token mask (`mask`)."""
