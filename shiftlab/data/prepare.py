"""Make sure a dataset's manifest exists before a run: generate, ingest, or say what to do."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.manifest import JSON_NAME


def ensure_manifest(cfg: DictConfig) -> None:
    """Synthetic datasets and twins (``twin=true``) are generated and ingested on first use;
    real ones must be ingested.

    Raises a ShiftlabError with the dataset's download instructions when its data is missing,
    and with the ingest command when the data is there but the manifest (of this split_seed)
    is not. Real data is never ingested implicitly: a header scan of a large archive is a
    step to run once, on purpose, not inside each job of a grid.
    """
    dataset = cfg.dataset
    meta_path = Path(dataset.manifest_dir) / JSON_NAME
    ingest_command = (
        f"python -m shiftlab.ingest dataset={dataset.name} split_seed={cfg.split_seed}"
        "  (with the same dataset.* and paths.* overrides as this run)"
    )
    if not meta_path.exists():
        # Imported only here: ingest brings pydicom, which a run with its manifest never needs.
        from shiftlab.ingest.run import ensure_twin, run_ingest

        if dataset.get("synthetic"):
            if not (Path(dataset.root) / "labels.csv").exists():
                print(f"generating synthetic dataset {dataset.name} into {dataset.root} ...")
                instantiate(dataset.synthetic)
            run_ingest(dataset, cfg.paths, cfg.split_seed)
        elif cfg.get("twin"):
            ensure_twin(dataset)
            run_ingest(dataset, cfg.paths, cfg.split_seed)
        elif not Path(dataset.dicom_root).is_dir():
            twin_hint = (
                f"\nTo try {dataset.name} first on its miniature synthetic twin (same folder "
                "layout and label files, generated here): add twin=true"
                if dataset.get("twin_generator")
                else ""
            )
            raise ShiftlabError(
                f"no data for dataset {dataset.name!r}: expected DICOM files under "
                f"{dataset.dicom_root}\n{str(dataset.download).strip()}{twin_hint}"
            )
        else:
            raise ShiftlabError(
                f"dataset {dataset.name!r} has DICOM files under {dataset.dicom_root} but no "
                f"manifest at {meta_path}. Run:\n  {ingest_command}"
            )
    made_with = json.loads(meta_path.read_text()).get("split_seed")
    if made_with != cfg.split_seed:
        raise ShiftlabError(
            f"the manifest of {dataset.name!r} was made with split_seed={made_with}, this run asks "
            f"for split_seed={cfg.split_seed}. Re-run ingest:\n  {ingest_command}"
        )
