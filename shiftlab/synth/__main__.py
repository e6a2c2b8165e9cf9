"""Generate a synthetic dataset as DICOM files and ingest it.

    python -m shiftlab.synth                                   # synthetic_mri, default settings
    python -m shiftlab.synth dataset.synthetic.severity=0      # identical vendors (null check)
"""

import sys

import hydra
from omegaconf import DictConfig

from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.ingest import run_ingest


@hydra.main(version_base="1.3", config_path="../../conf", config_name="ingest")
def main(cfg: DictConfig) -> None:
    if not cfg.dataset.get("synthetic"):
        print(f"error: dataset {cfg.dataset.name!r} is not synthetic", file=sys.stderr)
        sys.exit(2)
    try:
        out = instantiate(cfg.dataset.synthetic)
        print(f"wrote DICOM files and labels under {out}")
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    except ShiftlabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
