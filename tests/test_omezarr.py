"""OME-Zarr: round trips with voxel size and origin, files laid out as the CryoET Data Portal serves them,
and segmenting from and to OME-Zarr through the command line."""

import json

import numpy as np
import pytest
import zarr

from annotomo.cli import main
from annotomo.volumes import check_output_path, open_volume, read_labels, volume_writer, write_volume

ZARR3 = int(zarr.__version__.split(".")[0]) >= 3


def v2_group(path):
    """A zarr v2-format group with either zarr library (2, as copick needs, or 3)."""
    return zarr.open_group(str(path), mode="w", zarr_format=2) if ZARR3 else zarr.open_group(str(path), mode="w")


def add_array(group, name, **options):
    return group.create_array(name, **options) if ZARR3 else group.create_dataset(name, **options)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int16, np.float16])
def test_round_trip_keeps_values_dtype_voxel_size_and_origin(tmp_path, dtype):
    data = (np.random.default_rng(0).normal(size=(6, 40, 50)) * 20).astype(dtype)
    path = tmp_path / "t.ome.zarr"
    write_volume(path, data, (10.0, 11.0, 12.0), origin=(1.5, -2.5, 3.5))
    with open_volume(path) as vol:
        assert vol.shape == data.shape and vol.data.dtype == data.dtype
        assert np.array_equal(np.asarray(vol.data[:]), data)
        assert vol.voxel_size == (10.0, 11.0, 12.0) and vol.origin == (1.5, -2.5, 3.5)
    meta = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    assert meta["version"] == "0.4" and [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
    assert all(a["unit"] == "angstrom" for a in meta["axes"])


def test_labels_round_trip_including_255(tmp_path):
    labels = np.array([0, 1, 2, 3, 4, 255], dtype=np.uint8).reshape(1, 2, 3).repeat(3, axis=0)
    write_volume(tmp_path / "l.zarr", labels, (28.0,) * 3)
    with read_labels(tmp_path / "l.zarr") as vol:
        assert vol.data.dtype == np.uint8 and np.array_equal(vol.data, labels)


def test_reads_a_portal_style_image_in_nanometres_with_a_channel_axis_and_a_pyramid(tmp_path):
    path = tmp_path / "portal.zarr"
    root = v2_group(path)
    full = np.arange(4 * 8 * 10, dtype=np.float32).reshape(1, 4, 8, 10)
    add_array(root, "0", shape=full.shape, chunks=(1, 4, 8, 10), dtype=np.float32)[:] = full
    add_array(root, "1", shape=(1, 2, 4, 5), chunks=(1, 2, 4, 5), dtype=np.float32)[:] = full[:, ::2, ::2, ::2]
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "c", "type": "channel"}]
            + [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1.0, 1.0, 1.0]}]},
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1, 2.0, 2.0, 2.0]}]},
            ],
        }
    ]
    with open_volume(path) as vol:
        assert vol.shape == (4, 8, 10) and vol.voxel_size == (10.0, 10.0, 10.0)
        assert np.array_equal(np.asarray(vol.data), full[0])
        assert np.array_equal(vol.data[2, ::2, ::3], full[0, 2, ::2, ::3])


def test_bare_zarr_array_reads_without_a_voxel_size(tmp_path):
    arr = zarr.open_array(str(tmp_path / "bare.zarr"), mode="w", shape=(3, 5, 6), dtype=np.float32)
    arr[:] = 1.0
    with open_volume(tmp_path / "bare.zarr") as vol:
        assert vol.shape == (3, 5, 6) and vol.voxel_size is None


def test_unusable_zarr_inputs_name_the_file(tmp_path):
    from annotomo.errors import InputError

    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputError, match="empty.zarr"):
        open_volume(tmp_path / "empty.zarr")
    root = v2_group(tmp_path / "two.zarr")
    add_array(root, "a", shape=(2, 2, 2), dtype="f4")
    add_array(root, "b", shape=(2, 2, 2), dtype="f4")
    with pytest.raises(InputError, match="two.zarr.*multiscales"):
        open_volume(tmp_path / "two.zarr")


def test_a_failed_write_leaves_no_folder_and_keeps_the_old_output(tmp_path):
    target = tmp_path / "out.ome.zarr"
    write_volume(target, np.ones((2, 4, 4), np.uint8), (1.0,) * 3)
    with pytest.raises(RuntimeError):
        with volume_writer(target, (2, 4, 4), np.uint8, (1.0,) * 3) as out:
            out[0] = 7
            raise RuntimeError("interrupted")
    with read_labels(target) as vol:
        assert np.all(vol.data == 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ome.zarr"]
    with pytest.raises(Exception, match="exists"):
        check_output_path(target)


@pytest.mark.slow
def test_segment_from_and_to_ome_zarr_matches_mrc(model_file, small_files, tmp_path):
    model = model_file
    with open_volume(small_files["test_tomo"]) as vol:
        write_volume(tmp_path / "cell.ome.zarr", np.asarray(vol.data), vol.voxel_size, origin=(0.0, 28.0, 56.0))
    assert main(["segment", str(model), str(small_files["test_tomo"]), "-o", str(tmp_path / "mrc"), "--quiet"]) == 0
    assert (
        main(
            [
                "segment",
                str(model),
                str(tmp_path / "cell.ome.zarr"),
                "-o",
                str(tmp_path / "zarr"),
                "--quiet",
                "--format",
                "zarr",
                "--probabilities",
            ]
        )
        == 0
    )
    out = tmp_path / "zarr" / "cell_labels.ome.zarr"
    with read_labels(tmp_path / "mrc" / "test_tomo_labels.mrc") as a, read_labels(out) as b:
        assert np.array_equal(a.data, b.data)
        assert b.voxel_size == (28.0,) * 3 and b.origin == (0.0, 28.0, 56.0)
    with open_volume(tmp_path / "zarr" / "cell_ribosome.ome.zarr") as p:
        prob = np.asarray(p.data)
        assert p.data.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
