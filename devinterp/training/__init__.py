"""Training: the loop (nanoGPT-style, dense checkpoints, exact resume), its config, optimizer,
checkpoint schedule, loggers and the summary of a finished run."""
