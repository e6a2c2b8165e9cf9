"""Generate a synthetic dataset as DICOM files and ingest it.

python -m shiftlab.synth                                   # synthetic_mri, default settings
python -m shiftlab.synth dataset.synthetic.severity=0      # identical vendors (null check)
"""

import hydra
from omegaconf import DictConfig

from shiftlab.config import CONF_DIR
from shiftlab.errors import ShiftlabError, exit_on_user_error, instantiate
from shiftlab.ingest.run import run_ingest


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="ingest")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        if not cfg.dataset.get("synthetic"):
            raise ShiftlabError(
                f"dataset {cfg.dataset.name!r} is not synthetic: nothing to generate"
            )
        out = instantiate(cfg.dataset.synthetic)
        print(f"wrote DICOM files and labels under {out}")
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)


if __name__ == "__main__":
    main()
