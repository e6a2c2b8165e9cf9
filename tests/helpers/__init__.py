"""What the tests share, by job: ``compose`` (the real config tree composed with temporary
folders, the repository's root), ``sets`` (the synthetic sets and trained runs the session fixtures
of ``conftest.py`` hand out, and their sizes), ``wandb_files`` (reading W&B's offline run files),
``dicom_factory`` (small real DICOM series written for a test). Tests import from here; pytest's
``conftest.py`` holds only fixtures."""
