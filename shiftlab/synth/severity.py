"""The severity knob shared by every synthetic modality.

Each vendor has full-shift acquisition parameters. At severity ``s`` a vendor uses
``mid + s * (own - mid)``, where ``mid`` is the two vendors' average: ``s = 0`` makes the vendors
identical (a built-in null check: ΔAUC must vanish), ``s = 1`` is the full shift.
"""

from collections.abc import Mapping


def interpolate_vendor(
    own: Mapping[str, float], other: Mapping[str, float], severity: float
) -> dict[str, float]:
    """Parameters of one vendor at ``severity``, moved towards the midpoint with ``other``."""
    if severity < 0:
        raise ValueError(f"severity must be >= 0, got {severity}")
    if own.keys() != other.keys():
        raise ValueError(f"vendors define different parameters: {sorted(own)} vs {sorted(other)}")
    return {
        name: (own[name] + other[name]) / 2 + severity * (own[name] - other[name]) / 2
        for name in own
    }


def interpolate_vendors(
    acquisitions: Mapping[str, Mapping[str, float]], severity: float
) -> dict[str, dict[str, float]]:
    """Every vendor of a two-vendor table at ``severity``, each moved towards the other."""
    if len(acquisitions) != 2:
        raise ValueError(f"a severity interpolates two vendors, got {sorted(acquisitions)}")
    first, second = acquisitions
    return {
        first: interpolate_vendor(acquisitions[first], acquisitions[second], severity),
        second: interpolate_vendor(acquisitions[second], acquisitions[first], severity),
    }
