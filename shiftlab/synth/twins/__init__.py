"""Miniature official-layout twins of the public datasets (synthetic DICOM, not real data)."""
