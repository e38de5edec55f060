"""Training: the loop, evaluation, optimizer and schedule, checkpoints, run logs."""
