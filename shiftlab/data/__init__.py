"""From a manifest to batches: ``prepare`` makes sure the manifest exists (ingest or generate),
``preprocess`` turns one sample's slices into an array, ``cache`` stores every sample's array
once, ``loading`` reads them back batch-wise, ``shift`` holds the ablations (target injection,
training noise), and ``datamodule`` puts them together as a LightningDataModule."""
