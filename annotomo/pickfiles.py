"""Particle lists in the formats of the tools that read them (`annotomo pick --format`).

Every format follows the coordinate convention of copick's converters (the CryoET Data Portal's tools,
maintained, tested against RELION and Dynamo): a voxel index i (first voxel 0, its centre) is i x pixel
size in Angstrom; RELION 5 centres coordinates on the tomogram, (i - n / 2) x pixel size, with n the
tomogram's size along that axis (copick.util.formats.get_tomogram_centers_from_copick; RELION's
tomograms.star gives rlnTomoSize{X,Y,Z} / 2 as the centre). Each text file states its convention in a
comment line or its column names; IMOD models carry the pixel size in their header.

    relion5  STAR: rlnTomoName, rlnCenteredCoordinate{X,Y,Z}Angst (RELION 5's tomography pipeline)
    relion3  STAR: rlnCoordinate{X,Y,Z} in voxels, plus Angstrom columns (RELION 3/4, pytom, annotomo's default)
    warp     STAR: rlnCoordinate{X,Y,Z} in voxels with rlnMicrographName TOMO.tomostar (Warp/M import)
    dynamo   Dynamo .tbl (dynamotable): tag, x, y, z in voxels, angles 0
    imod     IMOD .mod (imodmodel): one scattered-point object, x, y, z in voxels, pixel size in the header
    csv      CSV: x/y/z in voxels and Angstrom (the column names say which), voxels per particle
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import AnnotomoError
from .postprocess import Picks, picks_table, write_picks

PICK_FORMATS = {
    "relion5": ".star",
    "relion3": ".star",
    "warp": ".star",
    "dynamo": ".tbl",
    "imod": ".mod",
    "csv": ".csv",
}
IMOD_ANGSTROM = -10  # the model header's unit code for Angstrom (IMOD binspec: 0 pixels, -9 nm, -10 A)
_NEEDS = {"dynamo": "dynamotable", "imod": "imodmodel"}


def relion5_table(picks: Picks, shape, tomo_name: str):
    """RELION 5 particles: rlnTomoName and centred Angstrom coordinates on a tomogram of `shape` (z, y, x)."""
    import pandas as pd

    if not picks.pixel_size:
        raise AnnotomoError("RELION 5 coordinates are in Angstrom: the segmentation has no pixel size (give one)")
    centred = (picks.centres - np.asarray(shape, float) / 2) * picks.pixel_size
    return pd.DataFrame(
        {
            "rlnTomoName": [tomo_name] * len(centred),
            "rlnCenteredCoordinateXAngst": centred[:, 2],
            "rlnCenteredCoordinateYAngst": centred[:, 1],
            "rlnCenteredCoordinateZAngst": centred[:, 0],
        }
    )


def _warp_table(picks: Picks, tomo_name: str):
    import pandas as pd

    n = len(picks.centres)
    return pd.DataFrame(
        {
            "rlnCoordinateX": picks.centres[:, 2],
            "rlnCoordinateY": picks.centres[:, 1],
            "rlnCoordinateZ": picks.centres[:, 0],
            "rlnAngleRot": np.zeros(n),
            "rlnAngleTilt": np.zeros(n),
            "rlnAnglePsi": np.zeros(n),
            "rlnMicrographName": [f"{tomo_name}.tomostar"] * n,
        }
    )


def _write_star(table, path: Path, comment: str):
    import starfile

    with atomic_path(path) as tmp:
        starfile.write({"particles": table}, tmp, float_format="%.3f")
        text = tmp.read_text()
        tmp.write_text(f"# {comment}\n{text}")


def write_picks_as(picks: Picks, path, fmt: str, shape, tomo_name: str):
    """Write `picks` (picked on a tomogram of `shape`, z y x) to `path` in format `fmt` (see PICK_FORMATS).

    Raises AnnotomoError for an unknown format or a missing optional library (named with its pip command).
    """
    if fmt not in PICK_FORMATS:
        raise AnnotomoError(f"--format {fmt}: not one of {', '.join(PICK_FORMATS)}")
    if fmt in _NEEDS:
        try:
            __import__(_NEEDS[fmt])
        except ImportError:
            raise AnnotomoError(
                f"--format {fmt} needs the '{_NEEDS[fmt]}' package: pip install '{_NEEDS[fmt]}' "
                "(or the extra: pip install '.[formats]')"
            ) from None
    path = Path(path)
    px = picks.pixel_size or 1.0
    xyz = picks.centres[:, ::-1]
    if fmt == "relion5":
        size = " x ".join(str(int(n)) for n in shape[::-1])
        _write_star(
            relion5_table(picks, shape, tomo_name),
            path,
            f"annotomo: RELION 5 centred coordinates, Angstrom: (voxel index - size / 2) x {px:g} A, "
            f"tomogram {tomo_name} of {size} voxels (x y z), as copick's RELION 5 export",
        )
    elif fmt == "relion3":
        _write_star(picks_table(picks), path, f"annotomo: rlnCoordinate in voxels (first voxel 0), {px:g} A/voxel")
    elif fmt == "warp":
        _write_star(
            _warp_table(picks, tomo_name), path, f"annotomo: rlnCoordinate in voxels of {tomo_name} at {px:g} A/voxel"
        )
    elif fmt == "dynamo":
        import dynamotable
        import pandas as pd

        n = len(xyz)
        zeros = np.zeros(n)
        table = pd.DataFrame(
            {"tag": np.arange(1, n + 1), "aligned": np.ones(n, int), "averaged": np.ones(n, int)}
            | {k: zeros for k in ("dx", "dy", "dz", "tdrot", "tilt", "narot")}
            | {"cc": np.ones(n), "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "tomo": np.ones(n, int)}
        )
        with atomic_path(path) as tmp:
            named = tmp.with_name(tmp.name + ".tbl")  # dynamotable appends .tbl to any other name
            dynamotable.write(table, str(named))
            named.replace(tmp)
    elif fmt == "imod":
        import pandas as pd
        from imodmodel.models import ImodModel

        table = pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "object_id": 0, "contour_id": 0})
        model = ImodModel.from_dataframe(table)
        header = model.header
        header.xmax, header.ymax, header.zmax = (int(n) for n in shape[::-1])
        header.pixelsize, header.units = float(px), IMOD_ANGSTROM if picks.pixel_size else 0
        with atomic_path(path) as tmp:
            model.to_file(tmp)
    else:  # the column names say the convention: x_voxel ..., x_angstrom ...
        write_picks(picks, csv_path=path)
