"""Ingest: turn a DICOM tree and the dataset's label file into the manifest.

This is the only stage that reads DICOM headers. It must survive real downloads: any folder
layout, any file names, stray non-DICOM files, half-downloaded or damaged files, files without
pixel data or without a decoder for their compression, duplicates, and series that mix
modalities or slice geometries. A file that cannot be used is skipped and listed with its reason
in skipped.csv (counted by kind in manifest.json); no file stops the run. Every scanned file ends
up in a sample, in skipped.csv, or in a series listed in unused.csv (no label, not chosen);
samples kept with a caveat (vendor unknown, uneven slice spacing) are listed in flagged.csv.

    python -m shiftlab.ingest dataset=<name> [split_seed=N]

One job per module, in the order an ingest runs:

- ``headers``: read one file's header (``read_slice``): the values a manifest needs, slice
  position and geometry, why a file cannot be used; ``instance_number``.
- ``damage``: what is wrong with a damaged DICOM file, for skipped.csv.
- ``series``: walk the tree and group its files into series (``scan_dicom_tree``).
- ``selection``: which series become samples (``SeriesSelection``, ``dataset.ingest``).
- ``rows``: join the label file, build the manifest rows, split and write (``finish_manifest``).
- ``accounting``: where every file went (skipped.csv, unused.csv, flagged.csv), and the
  summary an ingest prints (``IngestSummary``, ``print_summary``).
- ``user_table``: a sample table written by hand (or built by a recipe) instead of a scan.
- ``bids``: a BIDS folder (NIfTI images, ``participants.tsv``) as such a sample table.
- ``multiframe`` and ``image_files``: a multi-frame DICOM file, or a NIfTI or PNG image, read as
  single-frame slices, so everything after them (ingest and the cache build alike) sees slices.
- ``reader_warnings``: the DICOM reader's warnings, shown once each without raw values.
- ``vendors``: the Manufacturer spellings each vendor goes by; ``pseudonym``: the keyed
  pseudonyms that replace PatientID and UIDs before anything leaves ingest.
- ``run``: the command (``run_ingest``, ``ensure_twin``, ``main``).

Nothing is imported here, so that reading one module (the cache build reads
``reader_warnings``) does not load the rest.
"""
