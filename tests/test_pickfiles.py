"""`annotomo pick --format`: each format's file read back by the library its users read it with, in the
convention the file states (voxel index, first voxel 0; RELION 5 centred on the tomogram, in Angstrom)."""

import numpy as np
import pytest
from helpers import run_cli

from annotomo.postprocess import read_centres
from annotomo.volumes import write_volume

SHAPE, PIXEL = (20, 60, 50), 14.0
CENTRES = np.array([[5.0, 10.0, 12.0], [14.0, 40.0, 30.0]])  # z y x voxels: two cubes' centres


@pytest.fixture
def segmentation(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    for z, y, x in CENTRES.astype(int):
        labels[z - 2 : z + 3, y - 2 : y + 3, x - 2 : x + 3] = 2
    path = tmp_path / "TS-3_labels.mrc"
    write_volume(path, labels, (PIXEL,) * 3, class_names=["microtubule", "ribosome"])
    return path


def pick(segmentation, tmp_path, fmt, *extra):
    return run_cli("pick", segmentation, "--class", "ribosome", "-o", tmp_path / "p", "--format", fmt, *extra)


def test_relion5_is_centred_angstrom_with_the_tomogram_name(segmentation, tmp_path):
    import starfile

    code, out, err = pick(segmentation, tmp_path, "relion5")
    assert code == 0, err
    table = starfile.read(tmp_path / "p.star")
    assert list(table["rlnTomoName"]) == ["TS-3", "TS-3"]  # from the file name, _labels dropped
    centred = (CENTRES - np.array(SHAPE) / 2) * PIXEL
    got = table[[f"rlnCenteredCoordinate{a}Angst" for a in "ZYX"]].to_numpy()
    assert np.allclose(got, centred)
    assert "(voxel index - size / 2) x 14 A" in (tmp_path / "p.star").read_text().splitlines()[0]
    code, _, err = pick(segmentation, tmp_path, "relion5", "--tomo-name", "TS-3-bin4", "--overwrite")
    assert code == 0 and set(starfile.read(tmp_path / "p.star")["rlnTomoName"]) == {"TS-3-bin4"}


@pytest.mark.parametrize("fmt, suffix", [("relion3", ".star"), ("csv", ".csv")])
def test_voxel_formats_read_back_to_the_same_centres(segmentation, tmp_path, fmt, suffix):
    code, _, err = pick(segmentation, tmp_path, fmt)
    assert code == 0, err
    assert np.allclose(read_centres(tmp_path / f"p{suffix}"), CENTRES)


def test_warp_names_the_tomostar_and_keeps_voxels(segmentation, tmp_path):
    import starfile

    assert pick(segmentation, tmp_path, "warp")[0] == 0
    table = starfile.read(tmp_path / "p.star")
    assert set(table["rlnMicrographName"]) == {"TS-3.tomostar"}
    assert np.allclose(table[["rlnCoordinateZ", "rlnCoordinateY", "rlnCoordinateX"]].to_numpy(), CENTRES)


def test_dynamo_table_through_dynamotable(segmentation, tmp_path):
    dynamotable = pytest.importorskip("dynamotable")
    assert pick(segmentation, tmp_path, "dynamo")[0] == 0
    table = dynamotable.read(str(tmp_path / "p.tbl"))
    assert np.allclose(table[["z", "y", "x"]].to_numpy(), CENTRES)
    assert list(table["tag"]) == [1, 2]


def test_imod_model_through_imodmodel_with_the_pixel_size(segmentation, tmp_path):
    imodmodel = pytest.importorskip("imodmodel")
    from imodmodel.models import ImodModel

    assert pick(segmentation, tmp_path, "imod")[0] == 0
    table = imodmodel.read(tmp_path / "p.mod")
    assert np.allclose(table[["z", "y", "x"]].to_numpy(), CENTRES)
    header = ImodModel.from_file(tmp_path / "p.mod").header
    assert header.pixelsize == pytest.approx(PIXEL) and header.units == -10
    assert (header.xmax, header.ymax, header.zmax) == SHAPE[::-1]


def test_an_existing_file_is_kept_without_overwrite(segmentation, tmp_path):
    assert pick(segmentation, tmp_path, "relion5")[0] == 0
    before = (tmp_path / "p.star").read_text()
    code, _, err = pick(segmentation, tmp_path, "relion5")
    assert code != 0 and "exists" in err and "Traceback" not in err
    assert (tmp_path / "p.star").read_text() == before
