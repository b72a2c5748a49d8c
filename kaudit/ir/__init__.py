"""The lowered form: one typed control-flow graph per function, read by the rules and the model alike."""
