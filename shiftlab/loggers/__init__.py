"""What a run sends to its loggers: the W&B logger (``wandb``) and the masking of every local path
before anything leaves the machine (``local_paths``)."""
