"""Reading and writing volumes: round trips, voxel size, atomic writes, files from other programs."""

import numpy as np
import pytest
from helpers import SHARED_FIXTURES

from annotomo.errors import InputError
from annotomo.volumes import (
    check_output_path,
    open_volume,
    read_labels,
    read_pixel_size,
    volume_writer,
    write_volume,
)


def test_float_round_trip_keeps_values_voxel_size_and_origin(tmp_path):
    data = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    write_volume(tmp_path / "t.mrc", data, (10.0, 11.0, 12.0), origin=(1.5, 2.5, 3.5))
    with open_volume(tmp_path / "t.mrc") as vol:
        assert np.array_equal(vol.data, data)
        assert vol.voxel_size == (10.0, 11.0, 12.0)
        assert vol.origin == (1.5, 2.5, 3.5)
        assert vol.pixel_size == 12.0


def test_labels_round_trip_as_unsigned_bytes_including_255(tmp_path):
    labels = np.array([0, 1, 2, 3, 4, 255], dtype=np.uint8).reshape(1, 2, 3).repeat(2, axis=0)
    write_volume(tmp_path / "l.mrc", labels, (28.0,) * 3)
    with read_labels(tmp_path / "l.mrc") as vol:
        assert vol.data.dtype == np.uint8 and vol.mode == 0
        assert np.array_equal(vol.data, labels)


def test_a_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.mrc"
    with pytest.raises(RuntimeError):
        with volume_writer(target, (2, 4, 4), np.float32, (1.0,) * 3) as out:
            out[0] = 1.0
            raise RuntimeError("crash in the middle")
    assert list(tmp_path.iterdir()) == []


def test_output_checks(tmp_path):
    existing = tmp_path / "a.mrc"
    existing.write_bytes(b"x")
    with pytest.raises(InputError, match="exists"):
        check_output_path(existing)
    assert check_output_path(existing, overwrite=True) == existing
    with pytest.raises(InputError, match="same as an input"):
        check_output_path(existing, inputs=[existing], overwrite=True)
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "b.mrc")


def test_two_dimensional_image_is_refused_as_a_tomogram(tmp_path):
    write_volume(tmp_path / "img.mrc", np.zeros((1, 32, 32), np.float32), (10.0,) * 3)
    with pytest.raises(InputError, match="1-slice"):
        open_volume(tmp_path / "img.mrc", min_slices=2)


needs_fixtures = pytest.mark.skipif(not SHARED_FIXTURES.exists(), reason="../shared/fixtures/io not present")
RAMP = (np.arange(1536).reshape(8, 12, 16) % 97) - 48


@needs_fixtures
@pytest.mark.parametrize(
    "name",
    [
        "mode0_int8.mrc",
        "mode1_int16.mrc",
        "mode2_float32.mrc",
        "mode12_float16.mrc",
        "mode2_float32_bigendian.mrc",
        "mode2_float32.mrc.gz",
        "tomo_like.rec",
    ],
)
def test_reads_every_common_mode(name):
    with open_volume(SHARED_FIXTURES / "generated" / name) as vol:
        assert vol.shape == (8, 12, 16)
        values = np.asarray(vol.data, dtype=np.float64)
        scale = values.max() / RAMP.max()  # the int16 file stores the ramp x 100
        assert np.array_equal(values, RAMP * scale)
        assert vol.voxel_size == pytest.approx((10.0, 10.0, 10.0))


@needs_fixtures
def test_imod_unsigned_mode0_reads_as_unsigned_bytes():
    with open_volume(SHARED_FIXTURES / "generated" / "mode0_uint8_imod_unsigned.mrc") as vol:
        assert vol.data.dtype == np.uint8 and int(vol.data.max()) > 127


@needs_fixtures
def test_anisotropic_voxel_size_in_zyx_order():
    with open_volume(SHARED_FIXTURES / "generated" / "mode2_anisotropic_voxel.mrc") as vol:
        assert vol.voxel_size == pytest.approx((12.0, 11.0, 10.0))


@needs_fixtures
def test_odd_headers_from_other_programs_read_with_a_warning():
    with pytest.warns(UserWarning):
        with open_volume(SHARED_FIXTURES / "tardis" / "mrc3D.mrc") as vol:
            assert vol.data.ndim == 3 and vol.pixel_size == pytest.approx(23.2, rel=0.01)


def test_a_library_deprecation_notice_is_not_reported_as_a_problem_of_the_file(tmp_path, monkeypatch):
    """NumPy 2.5 deprecates something mrcfile 1.5 does on every open: users must not be told their file is odd."""
    import warnings

    import mrcfile

    path = tmp_path / "t.mrc"
    write_volume(path, np.zeros((3, 4, 5), np.float32), (10.0,) * 3)
    real_mmap = mrcfile.mmap

    def mmap_with_a_deprecation(*args, **kwargs):
        warnings.warn("Setting the dtype on a NumPy array has been deprecated", DeprecationWarning, stacklevel=2)
        return real_mmap(*args, **kwargs)

    monkeypatch.setattr(mrcfile, "mmap", mmap_with_a_deprecation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_volume(path) as vol:
            assert vol.shape == (3, 4, 5)
    # Passed on unchanged (NumPy 2.5 adds mrcfile's own real notice to the list; nothing else may appear).
    assert "Setting the dtype on a NumPy array has been deprecated" in [str(w.message) for w in caught]
    assert all(w.category is DeprecationWarning and str(path) not in str(w.message) for w in caught)


@needs_fixtures
def test_eman2_hdf_reads_with_its_pixel_size():
    with open_volume(SHARED_FIXTURES / "generated" / "eman2_like.hdf") as vol:
        assert vol.shape == (8, 12, 16) and vol.voxel_size == (10.0, 10.0, 10.0)
        assert np.array_equal(np.asarray(vol.data[2:4]), RAMP[2:4])  # read slab by slab from disk


def test_multipage_tiff_reads_with_imagej_spacing(tmp_path):
    import tifffile

    data = np.random.default_rng(0).normal(size=(5, 16, 24)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "stack.tif",
        data,
        imagej=True,
        resolution=(1 / 2.8, 1 / 2.8),
        metadata={"unit": "nm", "spacing": 2.8, "axes": "ZYX"},
    )
    with open_volume(tmp_path / "stack.tif") as vol:
        assert np.array_equal(vol.data, data)
        assert vol.voxel_size == pytest.approx((28.0, 28.0, 28.0))


def test_the_pixel_size_is_read_from_the_header_alone(tmp_path):
    import gzip

    import tifffile

    write_volume(tmp_path / "t.mrc", RAMP.astype(np.float32), (14.0, 14.0, 14.0))
    whole = gzip.compress((tmp_path / "t.mrc").read_bytes())
    (tmp_path / "t.mrc.gz").write_bytes(whole)
    tifffile.imwrite(
        tmp_path / "t.tif",
        RAMP.astype(np.float32),
        imagej=True,
        resolution=(1 / 1.4, 1 / 1.4),
        metadata={"unit": "nm", "spacing": 1.4, "axes": "ZYX"},
    )
    for name in ("t.mrc", "t.mrc.gz", "t.tif"):
        with open_volume(tmp_path / name) as vol:
            assert read_pixel_size(tmp_path / name) == pytest.approx(vol.pixel_size) == pytest.approx(14.0)
    # The data is not read: a compressed file cut short after its header still gives its pixel size,
    # where opening it fails.
    (tmp_path / "cut.mrc.gz").write_bytes(gzip.compress((tmp_path / "t.mrc").read_bytes()[:1100]))
    assert read_pixel_size(tmp_path / "cut.mrc.gz") == pytest.approx(14.0)
    with pytest.raises(InputError):
        open_volume(tmp_path / "cut.mrc.gz")
    write_volume(tmp_path / "none.mrc", RAMP.astype(np.float32), (0.0, 0.0, 0.0))
    assert read_pixel_size(tmp_path / "none.mrc") is None
    (tmp_path / "junk.mrc").write_bytes(b"not a tomogram")
    with pytest.raises(InputError, match="junk.mrc"):  # what open_volume says of it
        read_pixel_size(tmp_path / "junk.mrc")
