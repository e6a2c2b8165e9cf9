"""A run's life on disk: its lock and state (``states``), its record (``record``), why it failed
(``failure``), what made it (``provenance``: code and package versions), the GPU it trains on
(``gpu_slots``), and its SLURM job: the launcher that submits it (``slurm_launcher``) and what
the queue says about it (``slurm``)."""
