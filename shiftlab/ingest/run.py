"""The ingest command: a dataset's files and labels in, its manifest out, and a printed summary.

    python -m shiftlab.ingest dataset=<name> [split_seed=N]

A dataset is scanned as a DICOM folder, or imported as a sample table: written by hand
(``user_manifest``), built from a BIDS folder (``bids``) or by a recipe from a published label
file (``sample_table``: PadChest) (``shiftlab.ingest.user_table``).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from shiftlab.config import CONF_DIR, register_resolvers
from shiftlab.errors import ShiftlabError, exit_on_user_error, instantiate
from shiftlab.ingest.accounting import (
    FLAGGED_NAME,
    SKIPPED_NAME,
    UNUSED_NAME,
    Accounts,
    IngestSummary,
    ScanAccounts,
    ScanCounts,
    account_files,
    choice_by_description,
    count_skipped_kinds,
    print_summary,
    write_flagged,
    write_skipped,
    write_unused,
)
from shiftlab.ingest.headers import SeriesHeader
from shiftlab.ingest.pseudonym import load_or_create_key, pseudonym
from shiftlab.ingest.reader_warnings import reader_warnings
from shiftlab.ingest.rows import (
    finish_manifest,
    manifest_rows,
    no_match_error,
    no_vendor_error,
    read_labels,
    unmatched_labels,
)
from shiftlab.ingest.selection import SeriesSelection
from shiftlab.ingest.series import scan_dicom_tree
from shiftlab.ingest.user_table import import_user_manifest
from shiftlab.ingest.vendors import UNKNOWN
from shiftlab.labels import LabelTable

# Written last by a twin generator: a twin without it is incomplete and generated again.
TWIN_MARKER = "TWIN.txt"


def ensure_twin(dataset: DictConfig) -> None:
    """Write a preset's miniature official-layout twin unless it is complete already.

    Twin generators write TWIN_MARKER last, so a half-written twin is generated again.
    """
    if not dataset.get("twin_generator"):
        raise ShiftlabError(
            f"dataset {dataset.name!r} has no miniature twin (no dataset.twin_generator); "
            "twin=true is for the real presets (mri_breast, mri_prostate, mri_brain, "
            "ct_lung_nodule, ct_head, xray_chest, xray_chest_vindr, xray_mammo)."
        )
    if not (Path(dataset.root) / TWIN_MARKER).exists():
        print(f"generating the miniature twin of {dataset.name} into {dataset.root} ...")
        instantiate(dataset.twin_generator)


def run_ingest(dataset_cfg: DictConfig, paths_cfg: DictConfig, split_seed: int) -> IngestSummary:
    """Scan, label, pseudonymise, split and write the manifest of one dataset; print its summary
    (``print_summary``: also what was counted before an error stopped it) and return it.

    The DICOM reader's warnings are shown once each, values pseudonymised
    (``shiftlab.ingest.reader_warnings``): a warning can quote a header's UIDs.
    Re-running with the same inputs rewrites nothing (same bytes, same mtimes).
    """
    summary = IngestSummary()
    with reader_warnings("ingest", key=lambda: load_or_create_key(paths_cfg.pseudonym_key)):
        try:
            _ingest(dataset_cfg, paths_cfg, split_seed, summary)
        finally:
            print_summary(summary)
    return summary


def _ingest(
    dataset_cfg: DictConfig, paths_cfg: DictConfig, split_seed: int, summary: IngestSummary
) -> None:
    """Ingest one dataset, filling ``summary`` as it goes.

    A dataset with a ``user_manifest`` (a table written by hand) is imported from it instead of
    scanned, and so is a BIDS folder (``bids``: the table is built from its files) and a table
    built by a recipe from a published label file (``sample_table``: PadChest).
    """
    if dataset_cfg.get("user_manifest"):
        import_user_manifest(dataset_cfg, paths_cfg, split_seed, summary)
    elif dataset_cfg.get("bids"):
        from shiftlab.ingest.bids import sample_table

        table = sample_table(dataset_cfg)
        import_user_manifest(dataset_cfg, paths_cfg, split_seed, summary, table)
    elif dataset_cfg.get("sample_table"):  # a recipe builds the table (PadChest's label table)
        table = instantiate(dataset_cfg.sample_table)
        import_user_manifest(dataset_cfg, paths_cfg, split_seed, summary, table)
    else:
        _ingest_folder(dataset_cfg, paths_cfg, split_seed, summary)


def _ingest_folder(
    dataset_cfg: DictConfig, paths_cfg: DictConfig, split_seed: int, summary: IngestSummary
) -> None:
    """Scan a DICOM folder, choose its series, join the labels and write the manifest."""
    dicom_root = _existing_dicom_root(dataset_cfg)
    labels = read_labels(dataset_cfg)
    selection = _series_selection(dataset_cfg)
    manifest_dir = Path(dataset_cfg.manifest_dir)
    series, skipped = _scan(dicom_root, labels, selection, manifest_dir / SKIPPED_NAME, summary)
    chosen = _choose(series, selection, labels, summary.scan)

    key = load_or_create_key(paths_cfg.pseudonym_key)
    df, raw_patients, unlabelled, dropped = manifest_rows(chosen, labels, key)
    unmatched = unmatched_labels(labels, series, chosen, dicom_root, skipped)
    accounts = account_files(series, chosen, unlabelled, df, len(skipped), labels.key_tag)
    summary.scan_accounts = _write_accounts(
        manifest_dir, skipped, dropped, accounts, df, len(unlabelled), unmatched, labels
    )
    _check_samples(df, chosen, labels, dataset_cfg, summary.scan.unit, manifest_dir / FLAGGED_NAME)
    meta = _scan_meta(summary.scan, summary.scan_accounts, len(accounts.unused), key)
    summary.domains, summary.manifest = finish_manifest(
        df, raw_patients, dataset_cfg, split_seed, meta
    )


def _existing_dicom_root(dataset_cfg: DictConfig) -> Path:
    """The folder to scan; a missing one stops the ingest with the dataset's download steps."""
    dicom_root = Path(dataset_cfg.dicom_root)
    if not dicom_root.is_dir():
        raise ShiftlabError(
            f"DICOM folder not found: {dicom_root} (dataset {dataset_cfg.name}).\n"
            f"{str(dataset_cfg.get('download', '')).strip()}"
        )
    return dicom_root


def _series_selection(dataset_cfg: DictConfig) -> SeriesSelection:
    """Which series become samples, from ``dataset.ingest`` (none given: every series)."""
    options = dataset_cfg.get("ingest")
    return SeriesSelection.from_config(
        OmegaConf.to_container(options, resolve=True) if options else {}
    )


def _scan(
    dicom_root: Path,
    labels: LabelTable,
    selection: SeriesSelection,
    skipped_path: Path,
    summary: IngestSummary,
) -> tuple[list[SeriesHeader], list[tuple[str, str]]]:
    """Group the folder's files into series, reading the tags the labels and the selection need,
    and count them in ``summary.scan``; a folder without a series stops the ingest, with
    skipped.csv saying why each file was left out."""
    series, skipped = scan_dicom_tree(
        dicom_root,
        extra_tags=(labels.key_tag, *selection.keywords),
        group_by=selection.group_by,
    )
    n_files = sum(len(s.files) for s in series) + len(skipped)
    unit = "images" if selection.group_by == "SOPInstanceUID" else "series"
    summary.scan = ScanCounts(dicom_root, n_files, unit, len(series))
    if not series:
        write_skipped(skipped_path, skipped)
        raise ShiftlabError(f"no DICOM image series found under {dicom_root}; see {skipped_path}.")
    return series, skipped


def _choose(
    series: list[SeriesHeader], selection: SeriesSelection, labels: LabelTable, scan: ScanCounts
) -> list[SeriesHeader]:
    """The series that ``dataset.ingest`` chooses; what it left out is counted in ``scan``."""
    chosen = selection.apply(series, labels.key_tag)
    scan.n_not_chosen = len(series) - len(chosen)
    scan.by_description = choice_by_description(series, chosen) if selection.active else {}
    return chosen


def _write_accounts(
    manifest_dir: Path,
    skipped: list[tuple[str, str]],
    dropped: list[tuple[str, str]],
    accounts: Accounts,
    df: pd.DataFrame,
    n_unlabelled: int,
    unmatched: dict[str, int],
    labels: LabelTable,
) -> ScanAccounts:
    """Write skipped.csv, unused.csv and flagged.csv, and return the counts the summary prints:
    every scanned file is accounted for, also when an error stops the ingest next."""
    n_skipped_files = len(skipped)
    skipped = sorted([*skipped, *dropped])
    skipped_by_kind = count_skipped_kinds(skipped)
    write_skipped(manifest_dir / SKIPPED_NAME, skipped)
    write_unused(manifest_dir / UNUSED_NAME, accounts.unused)
    write_flagged(manifest_dir / FLAGGED_NAME, accounts.flagged)
    return ScanAccounts(
        manifest_dir=manifest_dir,
        n_skipped_files=n_skipped_files,
        n_dropped_samples=len(dropped),
        skipped_by_kind=skipped_by_kind,
        files=accounts.files,
        n_vendor_unknown=int((df["vendor"] == UNKNOWN).sum()),
        n_flagged=len(accounts.flagged),
        n_unlabelled=n_unlabelled,
        unmatched=unmatched,
        n_label_keys=len(labels.samples),
        key_tag=labels.key_tag,
    )


def _check_samples(
    df: pd.DataFrame,
    chosen: list[SeriesHeader],
    labels: LabelTable,
    dataset_cfg: DictConfig,
    unit: str,
    flagged_path: Path,
) -> None:
    """Stop, saying what to check, when no series matched a label or no sample has a vendor:
    such a manifest could not measure a vendor shift."""
    if df.empty:
        raise ShiftlabError(no_match_error(chosen, labels, str(dataset_cfg.labels.get("path"))))
    if (df["vendor"] == UNKNOWN).all():
        hint = str(dataset_cfg.get("no_vendor_hint") or "").strip()
        raise ShiftlabError(no_vendor_error(df, chosen, unit, hint, flagged_path))


def _scan_meta(
    scan: ScanCounts, accounts: ScanAccounts, n_series_unused: int, key: bytes
) -> dict[str, object]:
    """What manifest.json records about a folder scan: the counts the summary printed."""
    meta: dict[str, object] = {
        "label_key_tag": accounts.key_tag,
        "n_files_scanned": scan.n_files,
        # skipped.csv's rows: the files skipped by the scan and the samples dropped.
        "n_files_skipped": accounts.n_skipped_files + accounts.n_dropped_samples,
        "n_series_unlabelled": accounts.n_unlabelled,
        "pseudonym_key_id": pseudonym(key, "shiftlab-key-id", "k-"),
        # Every scanned file: in a sample, skipped (skipped.csv) or in an unused series.
        "files": accounts.files,
        "skipped_by_kind": accounts.skipped_by_kind,
        "n_series_unused": n_series_unused,
        "n_flagged": accounts.n_flagged,
        "n_samples_vendor_unknown": accounts.n_vendor_unknown,
        "labels_unmatched": accounts.unmatched,
    }
    if scan.n_not_chosen > 0:
        meta["n_series_not_chosen"] = scan.n_not_chosen
    if scan.by_description:
        meta["series_by_description"] = scan.by_description
    return meta


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="ingest")
def main(cfg: DictConfig) -> None:
    """Command-line entry: user errors become one line on stderr and exit status 2."""
    with exit_on_user_error():
        if cfg.get("twin"):
            ensure_twin(cfg.dataset)
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
